"""os-operator: decides which nodes upgrade, roll back or change settings, how many at once
and when (pure policy in ``plan`` and friends), and writes those decisions (``controller``).
"""
