from lfem_plugin.data.datamanager import ReIDDataManager
from lfem_plugin.data.transforms import MultiView, build_test_transform, build_train_transform


def test_the_datasets_are_built_with_the_given_transforms(synthetic_root):
    train = build_train_transform(64, 32, views=("original", "erased"))
    test = build_test_transform(64, 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    dm = ReIDDataManager(train_transform=train, test_transform=test, root=str(synthetic_root),
                         sources=["synthetic_reid"], height=64, width=32, transforms=None, batch_size_train=8,
                         batch_size_test=8, workers=0, use_gpu=False)
    assert isinstance(train, MultiView)
    assert dm.transform_tr is train and dm.train_loader.dataset.transform is train
    assert dm.transform_te is test
    assert all(loader.dataset.transform is test for loader in dm.test_loader["synthetic_reid"].values())
    views = next(iter(dm.train_loader))["img"]
    assert len(views) == 2 and views[0].shape == (8, 3, 64, 32)


def test_without_given_transforms_torchreid_builds_its_own(synthetic_root):
    dm = ReIDDataManager(root=str(synthetic_root), sources=["synthetic_reid"], height=64, width=32,
                         transforms=["random_flip"], batch_size_train=8, batch_size_test=8, workers=0, use_gpu=False)
    names = [type(t).__name__ for t in dm.transform_tr.transforms]
    assert "RandomHorizontalFlip" in names and dm.train_loader.dataset.transform is dm.transform_tr


def test_under_torchrun_the_train_loader_takes_this_ranks_share(synthetic_root):
    from lfem_plugin.data.sampler import DistributedIdentitySampler
    share = dict(batch_size=8, num_instances=2, seed=0, workers=0, pin_memory=False, sampler="RandomIdentitySampler")
    dm = ReIDDataManager(distributed=share, root=str(synthetic_root), sources=["synthetic_reid"], height=64, width=32,
                         transforms=["random_flip"], batch_size_train=8, batch_size_test=8, workers=0, use_gpu=False,
                         train_sampler="RandomIdentitySampler", num_instances=2)
    assert isinstance(dm.train_loader.sampler, DistributedIdentitySampler) and dm.train_loader.batch_size == 8
    batch = next(iter(dm.train_loader))
    assert len(batch["pid"]) == 8 and all((batch["pid"] == p).sum() == 2 for p in batch["pid"].unique())


def test_tune_loader_sets_prefetch_and_persistent_workers_and_keeps_the_rest():
    import torch

    from lfem_plugin.data.datamanager import tune_loader
    sampler = torch.utils.data.SequentialSampler(range(8))
    loader = torch.utils.data.DataLoader(list(range(8)), batch_size=4, sampler=sampler, num_workers=2, drop_last=True)
    tuned = tune_loader(loader, prefetch_factor=4, persistent_workers=True)
    assert (tuned.prefetch_factor, tuned.persistent_workers) == (4, True)
    assert (tuned.sampler, tuned.batch_size, tuned.num_workers, tuned.drop_last) == (sampler, 4, 2, True)
    assert tune_loader(loader) is loader  # torch's defaults: the loader as built
    single = torch.utils.data.DataLoader(list(range(8)), batch_size=4)
    assert tune_loader(single, prefetch_factor=4, persistent_workers=True) is single  # no workers to tune
