"""kbimg: builds KubeOS images (VM disk, PXE, upgrade image, admin container) without a shell.

Every external program is started with an argv list, user strings are data and never code, the
default VM-disk path mounts nothing, and outputs appear only when complete.
"""
