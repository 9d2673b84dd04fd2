"""Research script: find a preprocessing + training recipe for MuMu on real UTD-MHAD
(Skeleton + Inertial, leave-one-subject-out). Kept as the record of how the recipe in
`params/utd_mhad.yaml` was found; the product's own path is `cli.py extract/train`.

Every run prints one JSON line (settings, per-fold test accuracy, mean) and appends it to
`--log`. A fold trains on 6 subjects, selects the epoch on a 7th (validation) subject and
tests on the 8th, so the test subject never informs model selection.

    python benchmarks/explore_utd.py --folds 6,2 --set epochs=40 rate_hz=20 skeleton=centre_scale
    python benchmarks/explore_utd.py --folds all --seeds 0,1,2
    python benchmarks/explore_utd.py --logreg      # the 85 % reference point

The data path is the product's: `pipeline.sensors` (parse, common time base, windows),
`mumu.data.step_sampler` (step sampling), `mumu.transforms.SensorTransform`, and
`mumu.model.build_model`; only the training loop is a plain one (no Lightning) to stay light.
"""
from __future__ import annotations

import argparse
import json
import pickle
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data" / "utd_mhad"

HIP, SHOULDER_CENTER = 3, 1  # 0-based Kinect v1 joints

DEFAULTS = dict(
    rate_hz=50.0,          # common sensor time base (params extract.sensor_rate_hz)
    window=5, stride=5,    # sensor windows (extract.sensor_window / sensor_stride)
    max_steps=64,          # windows kept per sample (train.max_steps_sensor; jittered bins in training)
    skeleton="none",       # none | centre | centre_scale (hip-centred, / hip->shoulder-centre length)
    standardize=True,      # per-channel z-score with training-split statistics (the trainer always does)
    rotate_deg=0.0, scale=0.0, jitter=0.0,  # train-time augmentation (mumu/transforms.py)
    time_crop=0.0,         # 0 = random step per bin; > 0 = evenly spaced steps over a random crop (train.time_crop)
    embed_dim=128, dropout=0.2, beta_aux=0.5, conv_channels=64, sensor_encoder="window", kernel_size=3,
    lstm_layers=1, max_pools=0, modality_dropout=0.0, gm_heads=1, model="mumu",
    epochs=30, batch_size=32, lr=1e-3, weight_decay=0.01, label_smoothing=0.0, warmup=0.0,
    modalities="skeleton,inertial",
    ema="",                # also select among EMA copies of the weights, e.g. "0.99,0.995" (per-step decays)
    tta=1,                 # also report test-time averaging over this many step samplings (1 = centres only)
    select="acc",          # epoch selection rules to report: acc (best val accuracy, later epochs win ties),
                           # acc_first / f1_first (earlier epochs win ties; f1_first is cli.py train's), loss, last
)


# ---------------------------------------------------------------- data, as extraction builds it
def load_windows(cfg: dict, root: Path = DATA, cache_dir: Path = Path("/tmp/explore")) -> dict:
    """All 861 samples through the product's sensor path: parse, common time base, windows.
    Memoised in `cache_dir` per (rate, window, stride): parsing takes a while on a busy CPU."""
    memo = cache_dir / f"windows_{cfg['rate_hz']}_{cfg['window']}_{cfg['stride']}.pkl"
    if memo.is_file():
        return pickle.loads(memo.read_bytes())
    from pipeline.sensors import align_streams, cut_windows, read_utd_inertial, read_utd_skeleton

    pattern = re.compile(r"a(\d+)_s(\d+)_t(\d+)_inertial\.mat")
    windows, action, subject = [], [], []
    for f in sorted((root / "Inertial").glob("*.mat")):
        a, s, _ = map(int, pattern.match(f.name).groups())
        streams = {"inertial": read_utd_inertial(f),
                   "skeleton": read_utd_skeleton(root / "Skeleton" / f.name.replace("inertial", "skeleton"))}
        aligned = align_streams(streams, cfg["rate_hz"])
        windows.append({n: cut_windows(v, cfg["window"], cfg["stride"]) for n, v in aligned.items()})
        action.append(a)
        subject.append(s)
    data = dict(windows=windows, action=np.array(action), subject=np.array(subject))
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_bytes(pickle.dumps(data))
    return data


def make_transform(cfg: dict):
    from mumu.transforms import SensorTransform

    skeleton = None
    if cfg["skeleton"] != "none":
        skeleton = {"modality": "skeleton", "centre_joint": HIP,
                    "scale_joints": [SHOULDER_CENTER, HIP] if cfg["skeleton"] == "centre_scale" else None}
    return SensorTransform.from_params(
        {"skeleton": skeleton, "augment": dict(rotate_deg=cfg["rotate_deg"], scale=cfg["scale"], jitter=cfg["jitter"])})


def collate(items: list[dict[str, np.ndarray]]):
    """List of {name: (S, W, C)} -> x {name: (B, S_max, W, C)} zero-padded, lengths {name: (B,)}."""
    x, lengths = {}, {}
    for name in items[0]:
        s_max = max(len(it[name]) for it in items)
        batch = np.zeros((len(items), s_max) + items[0][name].shape[1:], np.float32)
        for i, it in enumerate(items):
            batch[i, : len(it[name])] = it[name]
        x[name] = torch.from_numpy(batch)
        lengths[name] = torch.tensor([len(it[name]) for it in items])
    return x, lengths


# ---------------------------------------------------------------- training
def run_fold(data: dict, labels, groups, test_subject: int, cfg: dict, seed: int) -> dict:
    from mumu.data import step_sampler
    from mumu.model import build_model, lost_modalities
    from pipeline.modalities import select_modalities

    subjects = data["subject"]
    val_subject = test_subject % 8 + 1  # as pipeline/splits.py: the next subject in cyclic order
    names = cfg["modalities"].split(",")
    idx = {k: np.where(m)[0] for k, m in dict(
        train=(subjects != test_subject) & (subjects != val_subject),
        val=subjects == val_subject, test=subjects == test_subject).items()}
    raw = [{n: w[n] for n in names} for w in data["windows"]]
    transform = make_transform(cfg)
    # per-channel statistics of the (body-frame) training windows, as mumu.module.MumuModule.fit_input_norm
    stats = {n: (0.0, 1.0) for n in names}
    if cfg["standardize"]:
        for n in names:
            cat = np.concatenate([transform(raw[i])[n].reshape(-1, raw[i][n].shape[-1]) for i in idx["train"]])
            std = cat.std(0)
            stats[n] = (cat.mean(0), np.where(std > 1e-6, std, 1.0))

    def sample(i: int, rng=None, augment: bool = True):
        """rng None: bin centres. augment False: jittered steps only (test-time views)."""
        pick = step_sampler(rng, cfg["time_crop"])
        x = transform({n: v[pick(len(v), cfg["max_steps"])] for n, v in raw[i].items()}, rng if augment else None)
        return {n: ((v - stats[n][0]) / stats[n][1]).astype(np.float32) for n, v in x.items()}

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    inputs = {s.name: s for s in select_modalities("utd_mhad", names)}
    model = build_model(cfg["model"], inputs, 27, 4, embed_dim=cfg["embed_dim"], dropout=cfg["dropout"],
                        window=cfg["window"], conv_channels=cfg["conv_channels"], kernel_size=cfg["kernel_size"],
                        sensor_encoder=cfg["sensor_encoder"], lstm_layers=cfg["lstm_layers"],
                        max_pools=cfg["max_pools"], gm_heads=cfg["gm_heads"])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    steps_per_epoch = int(np.ceil(len(idx["train"]) / cfg["batch_size"]))
    total = cfg["epochs"] * steps_per_epoch
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt, cfg["lr"], total_steps=total, pct_start=cfg["warmup"])
             if cfg["warmup"] > 0 else torch.optim.lr_scheduler.CosineAnnealingLR(opt, total))

    def view(split: str, rng=None) -> list:
        return [collate([sample(i, rng, augment=False) for i in idx[split][j : j + 128]])
                for j in range(0, len(idx[split]), 128)]

    tta_rng = np.random.default_rng(1000 + seed)  # time jitter only, no augmentation: fixed extra views
    eval_batches = {k: [view(k)] + [view(k, tta_rng) for _ in range(cfg["tta"] - 1)] for k in ("val", "test")}
    averages = {f"ema{d}": torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(float(d)), use_buffers=True)
        for d in cfg["ema"].split(",") if d}

    def probabilities(net, split: str) -> list[np.ndarray]:
        """Softmax per view: [centres, jittered view 1, ...], each (N, classes)."""
        net.eval()
        with torch.no_grad():
            return [torch.cat([net(x, l).logits.softmax(1) for x, l in batches]).numpy()
                    for batches in eval_batches[split]]

    view_counts = sorted({1, cfg["tta"]})  # 1: bin centres only
    variants = [(w, t) for w in ["raw", *averages] for t in view_counts]
    history = {v: [] for v in variants}  # per epoch: (val accuracy, val macro-F1, val loss, test predictions)
    for epoch in range(cfg["epochs"]):
        model.train()
        order = rng.permutation(idx["train"])
        for j in range(0, len(order), cfg["batch_size"]):
            batch = order[j : j + cfg["batch_size"]]
            x, l = collate([sample(i, rng) for i in batch])
            if cfg["modality_dropout"] > 0:
                present = torch.stack([l[n] > 0 for n in model.modalities], dim=1)  # (B, M)
                lost = lost_modalities(present, cfg["modality_dropout"])
                l = {n: l[n].masked_fill(lost[:, m], 0) for m, n in enumerate(model.modalities)}
            out = model(x, l)
            loss = F.cross_entropy(out.logits, torch.from_numpy(labels[batch]), label_smoothing=cfg["label_smoothing"])
            if out.group_logits is not None and cfg["beta_aux"] > 0:
                loss = loss + cfg["beta_aux"] * F.cross_entropy(out.group_logits, torch.from_numpy(groups[batch]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            for average in averages.values():
                average.update_parameters(model)
        truth = labels[idx["val"]]
        for w in ["raw", *averages]:
            net = model if w == "raw" else averages[w]
            val_views, test_views = probabilities(net, "val"), probabilities(net, "test")
            for t in view_counts:
                val, test = np.mean(val_views[:t], 0), np.mean(test_views[:t], 0)
                val_acc = float((val.argmax(1) == truth).mean())
                history[(w, t)].append((val_acc, f1_score(truth, val.argmax(1), average="macro"),
                                        float(-np.log(val[np.arange(len(truth)), truth] + 1e-12).mean()), test.argmax(1)))
                if cfg.get("verbose"):
                    print(f"fold s{test_subject} epoch {epoch} {w} tta{t}: loss {loss.item():.3f} val {val_acc:.3f}", flush=True)
    rules = {"acc": lambda h: max(range(len(h)), key=lambda e: (h[e][0], e)),  # later epochs win ties: more annealed
             "acc_first": lambda h: max(range(len(h)), key=lambda e: (h[e][0], -e)),
             "f1_first": lambda h: max(range(len(h)), key=lambda e: (h[e][1], -e)),
             "loss": lambda h: min(range(len(h)), key=lambda e: h[e][2]), "last": lambda h: len(h) - 1}
    best, test_acc = {}, {}
    for (w, t), h in history.items():
        for rule in cfg["select"].split(","):
            epoch = rules[rule](h)
            best[(w, t, rule)] = (h[epoch][0], epoch, h[epoch][3])
            key = f"{w}/tta{t}" + ("" if rule == "acc" else f"/{rule}")
            test_acc[key] = round(float((h[epoch][3] == labels[idx["test"]]).mean()), 4)
    best = best[("raw", 1, cfg["select"].split(",")[0])]
    test_pred = best[2]
    return dict(test_subject=test_subject, val_subject=val_subject, best_epoch=best[1], val_acc=best[0], variants=test_acc,
                test_acc=float((test_pred == labels[idx["test"]]).mean()),
                errors=[[int(labels[i]) + 1, int(p) + 1] for i, p in zip(idx["test"], test_pred) if p != labels[i]])


def logistic_regression_loso(steps: int = 32, c: float = 0.1) -> list[float]:
    """Reference point: logistic regression on `steps` resampled frames of hip-centred skeleton +
    inertial (raw files, normalised time), standardised on the training subjects. -> per-subject accuracy."""
    import scipy.io
    from scipy.signal import resample
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    pattern = re.compile(r"a(\d+)_s(\d+)_t(\d+)_inertial\.mat")
    features, action, subject = [], [], []
    for f in sorted((DATA / "Inertial").glob("*.mat")):
        a, s, _ = map(int, pattern.match(f.name).groups())
        inertial = scipy.io.loadmat(f)["d_iner"]
        skel = scipy.io.loadmat(DATA / "Skeleton" / f.name.replace("inertial", "skeleton"))["d_skel"].transpose(2, 0, 1)
        skel = (skel - skel[:, HIP : HIP + 1]).reshape(len(skel), -1)  # (T, 60) hip-centred
        features.append(np.concatenate([resample(inertial, steps, axis=0).ravel(), resample(skel, steps, axis=0).ravel()]))
        action.append(a)
        subject.append(s)
    x, y, subjects = np.array(features), np.array(action), np.array(subject)
    accuracy = []
    for test in range(1, 9):
        train = subjects != test
        scaler = StandardScaler().fit(x[train])
        clf = LogisticRegression(max_iter=2000, C=c).fit(scaler.transform(x[train]), y[train])
        accuracy.append(float((clf.predict(scaler.transform(x[~train])) == y[~train]).mean()))
    return accuracy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folds", default="all", help="test subjects, e.g. 6,2 or all")
    p.add_argument("--seeds", default="0")
    p.add_argument("--set", nargs="*", default=[], help="key=value overrides of DEFAULTS")
    p.add_argument("--name", default="")
    p.add_argument("--verbose", action="store_true", help="print every epoch's loss and validation accuracy")
    p.add_argument("--log", default="/tmp/explore/results.jsonl")
    p.add_argument("--logreg", action="store_true", help="only the logistic-regression reference (LOSO)")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.logreg:
        accuracy = logistic_regression_loso()
        print(json.dumps({"name": "logreg", "mean": float(np.mean(accuracy)), "per_fold": [round(a, 4) for a in accuracy]}))
        return

    cfg = dict(DEFAULTS)
    for kv in args.set:
        k, v = kv.split("=", 1)
        cfg[k] = type(DEFAULTS[k])(v) if not isinstance(DEFAULTS[k], bool) else v.lower() in ("1", "true", "yes")
    cfg["verbose"] = args.verbose
    folds = list(range(1, 9)) if args.folds == "all" else [int(f) for f in args.folds.split(",")]
    data = load_windows(cfg)
    labels = data["action"] - 1
    from pipeline.tables import load_table

    table = load_table("utd_mhad")  # activity groups as the product uses them
    groups = np.array([table.by_label(f"a{a}").group_id for a in data["action"]])
    t0 = time.time()
    results = [run_fold(data, labels, groups, f, cfg, int(s))
               for s in args.seeds.split(",") for f in folds]
    accs = [r["test_acc"] for r in results]
    record = dict(name=args.name, cfg={k: v for k, v in cfg.items() if k in DEFAULTS and v != DEFAULTS[k]},
                  seeds=args.seeds, folds=folds, mean=float(np.mean(accs)), std=float(np.std(accs)),
                  per_fold=[round(a, 4) for a in accs], best_epochs=[r["best_epoch"] for r in results],
                  errors=[r["errors"] for r in results], wall_s=round(time.time() - t0, 1))
    if len(results[0]["variants"]) > 1:  # mean test accuracy of each (weights, test-time views) selection
        record["variants"] = {v: round(float(np.mean([r["variants"][v] for r in results])), 4) for v in results[0]["variants"]}
        record["variants_per_fold"] = {v: [r["variants"][v] for r in results] for v in results[0]["variants"]}
    Path(args.log).parent.mkdir(parents=True, exist_ok=True)
    with open(args.log, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "errors"}))


if __name__ == "__main__":
    main()
