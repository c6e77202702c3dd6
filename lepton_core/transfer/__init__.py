"""Models of the migrated system: torchvision backbones and lepton's checkpoint format."""
