"""A/B boot management: the booted root, the ROOT-A/ROOT-B partitions, grubenv, slot checks."""
