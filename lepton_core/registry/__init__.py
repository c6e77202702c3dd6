"""The model registry on the object store: versions (checkpoint and model card) and stage pointers."""

from lepton_core.registry.registry import STAGES, ModelVersion, PromotionConflict, Registry, StagePointer

__all__ = ["STAGES", "ModelVersion", "PromotionConflict", "Registry", "StagePointer"]
