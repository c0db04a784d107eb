"""Network pieces shared by the methods: backbones, heads, losses, EMA."""
from .autoencoder import StackedAutoencoder, reconstruction_loss
from .backbones import BACKBONES, build_backbone, resolve_backbone
from .ema import ema_update
from .heads import ClusterHeads, ClusterModel, mlp_projector
from .losses import class_balanced_cross_entropy, entropy, nt_xent_loss, scan_loss

__all__ = ["StackedAutoencoder", "reconstruction_loss", "BACKBONES", "build_backbone", "resolve_backbone", "ema_update", "ClusterHeads", "ClusterModel",
           "mlp_projector", "class_balanced_cross_entropy", "entropy", "nt_xent_loss", "scan_loss"]
