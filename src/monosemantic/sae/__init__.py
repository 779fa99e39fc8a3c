"""Stage 4: dictionary learning with sparse autoencoders (does not import transformer/ or data/).

model.py             SAEConfig + SparseAutoencoder: encode / decode / forward, save / load
loss.py              pure losses: reconstruction_mse, l1_penalty, total_loss, per_example_loss
constraints.py       unit-norm decoder rows; removal of the gradient parallel to them
geometric_median.py  Weiszfeld, for the b_dec init
resample.py          the paper's dead-feature resampling
normalize.py         Normalizer: one scalar scale, fitted so E‖x‖ = √d_in; folds into an SAE
synthetic.py         planted sparse directions: ground truth for tests and benchmarks
train.py             SAETrainConfig + train_sae(saes, batches, cfg) -> list[TrainResult]
"""

from monosemantic.sae.model import SAEConfig, SparseAutoencoder
from monosemantic.sae.train import SAETrainConfig, TrainResult, train_sae

__all__ = ["SAEConfig", "SAETrainConfig", "SparseAutoencoder", "TrainResult", "train_sae"]
