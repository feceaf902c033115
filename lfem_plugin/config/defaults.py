"""Every config key with its default and one comment: torchreid's keys (``scripts/default_config.py`` names) plus
one ``lfem`` namespace for the plugin's own.
"""
from __future__ import annotations

from yacs.config import CfgNode as CN

from .extensions import extensions

__all__ = ["get_default_config", "add_lfem_config"]


def get_default_config() -> CN:
    """A fresh config; every key has a comment."""
    cfg = CN()
    cfg.use_gpu = True  # use CUDA when available
    cfg.model = CN()
    cfg.model.name = "lfem_vit"  # any name registered in torchreid's model factory
    cfg.model.pretrained = True  # ImageNet weights of the backbone (model.pretrained_path, else the download cache)
    cfg.model.pretrained_path = ""  # local file of the backbone's ImageNet weights (plugin models)
    cfg.model.load_weights = ""  # trained weights of the whole model (torchreid's meaning: test, fine-tune)
    cfg.model.resume = ""  # checkpoint to resume training from
    cfg.data = CN()
    cfg.data.type = "image"  # torchreid's key; only 'image' is supported (checked before a run)
    cfg.data.root = "reid-data"  # data root
    cfg.data.sources = ["occluded_duke"]  # training datasets
    cfg.data.targets = ["occluded_duke"]  # evaluation datasets
    cfg.data.workers = 4  # data loader processes
    cfg.data.prefetch_factor = 2  # training batches each loader process prepares ahead (torch's default; workers > 0)
    # keep the training loader's processes between epochs (no start-up per epoch; their random streams then differ
    # from a run resumed at that epoch, so off by default)
    cfg.data.persistent_workers = False
    cfg.data.height = 256  # input height
    cfg.data.width = 128  # input width
    cfg.data.norm_mean = [0.5, 0.5, 0.5]  # normalisation mean (the jx ViT weights use 0.5)
    cfg.data.norm_std = [0.5, 0.5, 0.5]  # normalisation std
    cfg.data.save_dir = "log/lfem"  # output folder: logs, TensorBoard, checkpoints
    cfg.data.skip_bad_images = False  # drop unreadable images when building the plugin's datasets (decodes all)
    cfg.data.market_layout = CN()  # datasets market_layout / market_layout_occluded: any Market-1501-layout folder
    # the folder: under data.root like every torchreid dataset (so configs name it and data.root stays the one path a
    # user passes), or an absolute path
    cfg.data.market_layout.folder = "market_layout"
    cfg.data.market_layout.query = "query"  # query folder of market_layout (e.g. query_occluded: occluded protocol)
    cfg.data.market_layout.occluded_query = "query_occluded"  # query folder of market_layout_occluded
    _add_training_config(cfg)
    _add_test_config(cfg)
    add_lfem_config(cfg)
    for extension in extensions():  # a research project's own keys (lfem_plugin.config.extensions)
        extension.add_keys(cfg)
    return cfg


def _add_training_config(cfg: CN) -> None:
    """torchreid's ``sampler``, ``train``, ``sgd`` and ``loss`` keys."""
    cfg.sampler = CN()
    cfg.sampler.train_sampler = "RandomIdentitySampler"  # torchreid sampler name (P x K)
    cfg.sampler.num_instances = 3  # K images per identity in a batch
    cfg.train = CN()
    cfg.train.optim = "sgd"  # 'sgd' or 'adamw'
    cfg.train.lr = 8e-3  # base learning rate
    cfg.train.weight_decay = 1e-4  # weight decay of non-bias parameters
    cfg.train.max_epoch = 200  # epochs
    cfg.train.start_epoch = 0  # first epoch (set by resume)
    cfg.train.batch_size = 48  # P x K images per batch (16 ids x 3)
    cfg.train.print_freq = 20  # log every N iterations
    cfg.train.seed = 1  # random seed
    cfg.train.checkpoint_period = 20  # save a resumable checkpoint every N epochs (0: only at evaluations/end)
    cfg.train.save_checkpoints = True  # write checkpoints at all (comparisons turn it off to save disk)
    cfg.sgd = CN()
    cfg.sgd.momentum = 0.9  # SGD momentum
    cfg.loss = CN()
    cfg.loss.name = "triplet"  # torchreid loss contract for stock engines: 'softmax' or 'triplet'
    cfg.loss.triplet = CN()
    cfg.loss.triplet.margin = 0.3  # triplet margin alpha (paper: 0.3)
    cfg.loss.triplet.weight_t = 1.0  # triplet weight (torchreid engines; plugin: scales every triplet term)
    cfg.loss.triplet.weight_x = 1.0  # CE weight (torchreid engines; plugin: scales every CE term)
    cfg.loss.softmax = CN()
    cfg.loss.softmax.label_smooth = False  # label smoothing (off in TransReID's Occluded-Duke recipe)


def _add_test_config(cfg: CN) -> None:
    """torchreid's ``test`` keys."""
    cfg.test = CN()
    cfg.test.batch_size = 256  # evaluation batch size (larger fills a big GPU: features are per image)
    # evaluation autocast on CUDA: 'off' (fp32, as before) or 'bf16' (faster; features returned in fp32; the paper
    # does not say). Always off on the CPU
    cfg.test.amp = "off"
    cfg.test.dist_metric = "euclidean"  # 'euclidean' or 'cosine'
    cfg.test.normalize_feature = True  # L2-normalise features before distances (paper)
    cfg.test.ranks = [1, 5, 10]  # CMC ranks to report
    cfg.test.evaluate = False  # evaluation only
    cfg.test.eval_freq = 20  # evaluate every N epochs (-1: only at the end)
    cfg.test.start_eval = 0  # first epoch that may evaluate
    cfg.test.rerank = False  # k-reciprocal re-ranking (off in the paper)
    cfg.test.visrank = False  # write ranked-list images (test only)
    cfg.test.visrank_topk = 10  # gallery images per ranked list
    cfg.test.use_cameras = True  # pass query/gallery camera ids to the model (SIE) at evaluation
    # SIE for a target that is not a training source (its cameras mean nothing to the model): 'mean' (every image
    # gets the mean SIE row), 'off' (no SIE term) or 'cameras' (its own ids, like a source's; unknown ones fail)
    cfg.test.cross_domain_sie = "mean"


def add_lfem_config(cfg: CN) -> None:
    """The plugin's own keys, all under ``cfg.lfem``."""
    cfg.lfem = CN()
    cfg.lfem.stride = 11  # patch stride of the ViT backbone (plugin models)
    cfg.lfem.sie_coef = 3.0  # camera SIE coefficient
    cfg.lfem.use_sie = True  # camera SIE (number of cameras from the training set)
    cfg.lfem.drop_path_rate = 0.1  # stochastic depth
    cfg.lfem.num_groups = 4  # JPM local groups
    cfg.lfem.rearrange = True  # JPM shift + shuffle
    cfg.lfem.shift_num = 5  # JPM shift (TransReID convention)
    cfg.lfem.shuffle_groups = 2  # JPM shuffle chunks
    cfg.lfem.use_lfem = True  # LFEM fusion (False: TransReID heads; ablation "RE&RC only")
    cfg.lfem.views = ["original", "erased", "cropped"]  # training views (["original"]: ablation "LFEM only")
    cfg.lfem.proj_dim = 0  # LFEM projection width (0: the feature width)
    cfg.lfem.scale_gate = True  # scale the LFEM relation by 1/sqrt(proj_dim)
    cfg.lfem.share = False  # one LFEM for all groups
    cfg.lfem.local_feature = "refined"  # local branch supervision: 'refined' | 'jpm' | 'fused'
    cfg.lfem.neck_feat = "before"  # evaluation feature before/after the BNNeck
    cfg.lfem.eval_feature = "final"  # 'final' (f_final) or 'concat' (TransReID's concatenation)
    cfg.lfem.loss_weights = "transreid"  # 'transreid' (0.5 mean of globals + 0.5 mean of locals) or 'paper' (all 1)
    cfg.lfem.soft_margin = False  # soft-margin triplet instead of margin
    cfg.lfem.flip_prob = 0.5  # horizontal flip probability
    cfg.lfem.padding = 10  # zero padding before the random crop
    cfg.lfem.re_prob = 0.5  # random erasing probability of the original view
    cfg.lfem.crop_scale = [0.5, 1.0]  # random-cropping view: area fraction range
    cfg.lfem.crop_ratio = [0.375, 0.667]  # random-cropping view: width/height range
    cfg.lfem.warmup_epochs = 5  # linear warmup epochs
    cfg.lfem.warmup_factor = 0.01  # warmup starts at this fraction of lr
    cfg.lfem.min_lr_factor = 0.002  # cosine ends at this fraction of lr
    cfg.lfem.bias_lr_factor = 2.0  # bias lr multiplier
    cfg.lfem.weight_decay_bias = 1e-4  # bias weight decay
    cfg.lfem.amp = "bf16"  # mixed precision on CUDA: 'bf16', 'fp16' or 'off' (always off on CPU)
    cfg.lfem.grad_clip = 0.0  # max gradient norm (0: off)
    cfg.lfem.compile = False  # torch.compile the training step (model + loss) and the model (checkpoints keep keys)
    cfg.lfem.tf32 = True  # TF32 matmuls/convolutions on Ampere+ GPUs for what runs in fp32 (CUDA only)
