"""Tests of the os-agent core: RPC, boot manager, disk-image upgrade (issue 5)."""
