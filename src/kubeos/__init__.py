"""KubeOS: Kubernetes-native A/B upgrades, rollbacks and settings for container OS nodes."""

__version__ = "0.1.0"
