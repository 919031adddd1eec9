"""The training loop: tf.data pipeline, CTC loss, Adam + warmup/cosine schedule, evaluation,
early stopping with best-weight restore, checkpoints for ``--resume`` and Ctrl-C, run artifacts.

TensorFlow is imported only here (and lazily), after the CLI has checked every argument.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .._common import package_version
from . import ctc, report
from .augment import AugmentConfig, augment_batch
from .ctc import ctc_loss, pack_targets
from .data import TrainDataError
from .model import ModelConfig, build_model
from .runinfo import RunInfo
from .tflog import quiet_native_stderr

CHECKPOINT_DIR = "checkpoint"


@dataclass
class Prepared:
    """Everything training needs, already checked and loaded (see ``cli.prepare``)."""

    charset: str
    recipe: Dict[str, Any]
    model_config: ModelConfig
    max_label_length: int
    train_images: np.ndarray  # uint8 (N, H, W)
    train_labels: List[str]
    train_names: List[str]
    val_images: np.ndarray
    val_labels: List[str]
    val_names: List[str]
    meta: Dict[str, Any] = field(default_factory=dict)  # data summary, split, sources
    init_from: Optional["WarmStart"] = None  # --init-from: weights to start from


@dataclass(frozen=True)
class WarmStart:
    """A trained model to start from (``--init-from``): its weights file, charset and config."""

    weights: Path  # model.keras of the earlier run
    charset: str
    model_config: ModelConfig


@dataclass
class Options:
    """Training hyper-parameters and switches (CLI flags)."""

    out: Path
    epochs: int = 40
    batch_size: int = 16
    learning_rate: float = 3e-3
    warmup_epochs: Optional[float] = 2.0  # None: warmup_steps
    warmup_steps: int = 300
    patience: int = 15
    seed: int = 0
    augment: Optional[AugmentConfig] = field(default_factory=AugmentConfig)
    augment_from: float = 0.0  # augmentation starts once val sequence accuracy reaches this
    resume: bool = False
    threads: int = 0
    max_minutes: float = 0.0
    # An epoch (one evaluation, checkpoint and patience unit) is at least this many optimizer
    # steps; a small training set is repeated within it (0 = an epoch is one pass).
    min_epoch_steps: int = 0
    # Optimizer steps per call of the compiled training function (Keras' steps_per_execution):
    # the callbacks (the schedule, the budget check) run once per call; see execution_steps.
    steps_per_execution: int = 8
    budget_clock: str = "wall"  # wall | cpu: what --max-minutes counts (cpu = process CPU time)
    mixed_precision: str = "auto"  # auto | on | off
    # > 0: Adam keeps an exponential moving average of the weights (this momentum), and the
    # epoch's evaluation, the best weights and the saved model use it (Polyak averaging).
    ema: float = 0.0
    verbose: int = 1
    # True: ``epochs`` is only a cap that the time budget reaches first (--epochs auto), so each
    # epoch's progress line gives the budget spent instead of "Epoch 3/10000".
    epochs_cap: bool = False


#: Augmentation also starts when the training loss falls below this share of the validation
#: loss (before the model reads --augment-from of the validation set).
MEMORIZE_RATIO = 0.5

#: The warm-up never takes more than this share of the run (a short time budget still decays).
WARMUP_MAX_SHARE = 0.1

#: --patience stops a run only once this share of the schedule has run (the learning rate is then
#: below ~15 % of its peak). Before it, the rate is high and the validation accuracy noisy, and
#: the decay still to come is where the best epochs are: a digits-color run of the conv head
#: (epochs of 12 CPU-s) stopped on patience at 466 of its 1800 CPU-seconds, reading 96.4 %,
#: where the BiLSTM run that used its budget read 97.4 %.
PATIENCE_FROM = 0.75


@dataclass(frozen=True)
class BudgetSchedule:
    """Learning rate as a function of progress through the run, step- or time-bound.

    Progress ``p`` is the larger of ``step / total_steps`` (the ``--epochs`` bound) and
    ``used_seconds / budget_seconds`` (``--max-minutes``), so the cosine reaches its floor exactly
    when the run ends, whichever bound comes first; the run stops at ``p = 1``. A linear warm-up
    from ``peak / 10`` lasts ``warmup_steps`` or :data:`WARMUP_MAX_SHARE` of the run, whichever
    is shorter.
    """

    peak: float
    total_steps: int
    warmup_steps: int = 0
    budget_seconds: float = 0.0  # 0 = no time bound
    alpha: float = 0.02  # floor = alpha * peak

    def progress(self, step: int, used_seconds: float) -> float:
        p = step / max(1, self.total_steps)
        if self.budget_seconds > 0:
            p = max(p, used_seconds / self.budget_seconds)
        return min(1.0, max(0.0, p))

    def __call__(self, step: int, used_seconds: float) -> float:
        import math

        p = self.progress(step, used_seconds)
        warm = 1.0
        if self.warmup_steps > 0:
            warm = min(1.0, max(step / self.warmup_steps, p / WARMUP_MAX_SHARE))
        cosine = self.alpha + (1.0 - self.alpha) * 0.5 * (1.0 + math.cos(math.pi * p))
        return float(self.peak * (0.1 + 0.9 * warm) * cosine)


def configure_tensorflow(threads: int, seed: int, mixed_precision: str
                         ) -> Tuple[Any, bool, Any]:
    """Set threads, seeds, mixed precision and the distribution strategy; return (strategy, gpu,
    the Keras dtype policy that was in force before, for :func:`train` to put back).

    Must run before any TensorFlow op executes (thread counts are fixed at first use).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_native_stderr():
        import keras
        import tensorflow as tf

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
        except RuntimeError:
            # TensorFlow already ran an op in this process (train() called from a notebook or
            # a test after other TF work): thread pools are fixed for the process's lifetime.
            if tf.config.threading.get_intra_op_parallelism_threads() not in (0, threads):
                print(f"warning: --threads {threads} ignored: TensorFlow is already initialised "
                      "in this process", file=sys.stderr)
    with quiet_native_stderr():  # cuInit's error on a machine without a CUDA driver
        gpus = tf.config.list_physical_devices("GPU")
    for g in gpus:
        try:
            tf.config.experimental.set_memory_growth(g, True)
        except (ValueError, RuntimeError):
            pass
    use_mp = mixed_precision == "on" or (mixed_precision == "auto" and bool(gpus))
    before = keras.mixed_precision.global_policy()
    # float16 compute on tensor cores; the "probs" softmax layer is pinned to float32 in model.py
    # and the loss casts logits to float32.
    keras.mixed_precision.set_global_policy("mixed_float16" if use_mp else "float32")
    keras.utils.set_random_seed(seed)
    if len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    return strategy, bool(gpus), before


def make_dataset(images: np.ndarray, targets: np.ndarray, batch_size: int, seed: int,
                 augment: Optional[AugmentConfig], gate: Any = None) -> Any:
    """Shuffled (each epoch, seeded) batches of (float32 (B,H,W,1) pixels, packed targets)."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((images, targets))
    ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    grey = images.ndim == 3  # (N, H, W) grey gets a channel axis; RGB is (N, H, W, 3)

    def to_input(x: Any, y: Any) -> Tuple[Any, Any]:
        x = tf.cast(x, tf.float32)
        if grey:
            x = x[..., None]
        if augment is not None:
            if gate is None:
                x = augment_batch(x, augment)
            else:  # a variable: 0 until the model first reads (see Options.augment_from)
                x = tf.cond(gate > 0, lambda: augment_batch(x, augment), lambda: x)
        return x, y

    return ds.map(to_input, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def predict_logits(model: Any, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Run the logits model in inference mode over uint8 images; float32 (N, T, C)."""
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].astype(np.float32)
        if x.ndim == 3:
            x = x[..., None]
        out.append(np.asarray(model(x, training=False), dtype=np.float32))
    return np.concatenate(out) if out else np.zeros((0, 0, 0), np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return out


def evaluate(train_model: Any, images: np.ndarray, labels: Sequence[str], targets: np.ndarray,
             charset: str) -> Tuple[Dict[str, float], List[str]]:
    """Validation loss, sequence accuracy and CER; also the predicted strings."""
    logits = predict_logits(train_model, images)
    loss = float(np.mean(np.asarray(ctc_loss(targets, logits))))
    preds = ctc.greedy_decode(softmax(logits), charset)
    s = ctc.score(labels, preds)
    return {"val_loss": loss, "val_seq_acc": s["seq_acc"], "val_cer": s["cer"]}, preds


def _is_better(a: Dict[str, float], b: Optional[Dict[str, float]]) -> bool:
    """Higher sequence accuracy wins, then lower CER, then lower validation loss."""
    if b is None:
        return True
    ka = (a["val_seq_acc"], -a["val_cer"], -a["val_loss"])
    kb = (b["val_seq_acc"], -b["val_cer"], -b["val_loss"])
    return ka > kb


class _Tracker:
    """Per-epoch evaluation, history, best weights, checkpoints and the stop rules."""

    def __init__(self, p: Prepared, o: Options, train_model: Any, val_targets: np.ndarray,
                 state: Dict[str, Any]) -> None:
        self.p, self.o, self.model = p, o, train_model
        self.val_targets = val_targets
        self.history: List[Dict[str, Any]] = list(state.get("history", []))
        self.best: Optional[Dict[str, float]] = state.get("best")
        self.best_epoch: int = int(state.get("best_epoch", 0))
        self.best_weights: Optional[List[np.ndarray]] = None
        self.since_best: int = int(state.get("since_best", 0))
        self.elapsed_before: float = float(state.get("train_seconds", 0.0))
        self.started = time.monotonic()
        self.stop_reason = ""
        self.augment_gate: Any = None  # tf.Variable set by train() when augmentation waits
        # set by train() with --ema: swaps the model's weights with their moving average (twice
        # restores them), so the evaluation and the best weights see the average
        self.swap_ema: Optional[Callable[[], None]] = None
        self.progress: Callable[[], float] = lambda: 1.0  # the schedule's progress (train())
        self.epoch_started = self.started
        self.epoch_cpu = time.process_time()
        self.cpu_before = float(state.get("train_cpu_seconds", 0.0))
        self.cpu_started = time.process_time()

    @property
    def seconds(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    @property
    def budget_used(self) -> float:
        """Seconds counted against ``--max-minutes`` (wall, or process CPU with --budget-clock cpu)."""
        return self.cpu_seconds if self.o.budget_clock == "cpu" else self.seconds

    @property
    def cpu_seconds(self) -> float:
        return self.cpu_before + time.process_time() - self.cpu_started

    def on_epoch_begin(self) -> None:
        self.epoch_started = time.monotonic()
        self.epoch_cpu = time.process_time()

    def on_epoch_end(self, epoch: int, logs: Dict[str, Any]) -> bool:
        """Evaluate, record, checkpoint; return True to stop training."""
        if self.swap_ema is not None:
            self.swap_ema()
        try:
            self._evaluate_epoch(epoch, logs)
        finally:
            if self.swap_ema is not None:
                self.swap_ema()  # the checkpoint and the next steps take the live weights
        self.save_checkpoint(next_epoch=epoch + 1)
        if self.o.patience and self.since_best >= self.o.patience \
                and self.progress() >= PATIENCE_FROM:
            self.stop_reason = f"early stop: no improvement for {self.o.patience} epochs"
        elif self.o.max_minutes and self.budget_used >= self.o.max_minutes * 60 * 0.999:
            self.stop_reason = (f"time budget of {self.o.max_minutes:g} min "
                                f"({self.o.budget_clock}) spent")
        elif self.perfect_for(max(3, self.o.patience // 3)):
            self.stop_reason = "validation is perfect and stable"
        return bool(self.stop_reason)

    def perfect_for(self, epochs: int) -> bool:
        """Whether each of the last ``epochs`` evaluations read every validation captcha.

        Every one, not the best one: on a small validation split a single epoch at 100 %
        while the learning rate is high is luck (a 329-image split read 100 % once, then
        96-98 % for five epochs, and the old rule, "the best epoch was perfect and nothing beat
        it since", stopped that run at 12 % of its budget)."""
        rows = self.history[-epochs:]
        return len(rows) == epochs and all(
            r.get("val_seq_acc", 0.0) >= 1.0 and r.get("val_cer", 1.0) == 0.0 for r in rows)

    def _evaluate_epoch(self, epoch: int, logs: Dict[str, Any]) -> None:
        """Validation metrics, the history row, the augmentation gate and the best weights."""
        metrics, _ = evaluate(self.model, self.p.val_images, self.p.val_labels,
                              self.val_targets, self.p.charset)
        logs.update(metrics)
        lr = self.model.optimizer.learning_rate
        row = {"epoch": epoch + 1, "loss": float(logs.get("loss", float("nan"))), **metrics,
               "lr": float(np.asarray(lr)), "epoch_seconds": round(time.monotonic()
                                                                   - self.epoch_started, 2),
               "train_seconds": round(self.seconds, 2),
               # CPU time of this process: on a shared machine it shows the cost independent
               # of the load (wall time there mostly measures the other jobs).
               "epoch_cpu_seconds": round(time.process_time() - self.epoch_cpu, 2),
               "train_cpu_seconds": round(self.cpu_seconds, 2)}
        gate = self.augment_gate
        row["augment"] = int(self.o.augment is not None and (gate is None or float(gate.numpy()) > 0))
        self.history.append(row)
        if gate is not None and float(gate.numpy()) == 0:
            why = ""
            if metrics["val_seq_acc"] >= self.o.augment_from:
                why = (f"val sequence accuracy {metrics['val_seq_acc']:.2f} >= "
                       f"{self.o.augment_from:g}")
            elif row["loss"] < MEMORIZE_RATIO * metrics["val_loss"]:
                # A small set is memorized before the model reads it (measured: 472 images of
                # the panel's "small" style, train loss 0.05 against val loss 19, 0 % read).
                why = (f"training loss {row['loss']:.2f} < {MEMORIZE_RATIO:g} x validation "
                       f"loss {metrics['val_loss']:.2f}: the training set is being memorized")
            if why:
                gate.assign(1.0)
                if self.o.verbose:
                    print(f"augmentation on from epoch {epoch + 2} ({why})", flush=True)
        if _is_better(metrics, self.best):
            self.best, self.best_epoch, self.since_best = metrics, epoch + 1, 0
            self.best_weights = self.model.get_weights()
            self.save_weights("best")
        else:
            self.since_best += 1

    # -- checkpoints ---------------------------------------------------------------------------
    def save_weights(self, which: str) -> None:
        path = self.o.out / CHECKPOINT_DIR / f"{which}.weights.h5"
        report.atomic_write(path, lambda t: self.model.save_weights(str(t)), ".weights.h5")

    def save_checkpoint(self, next_epoch: int, interrupted: bool = False) -> None:
        self.save_weights("last")
        state = {
            "next_epoch": next_epoch,
            "step": int(np.asarray(self.model.optimizer.iterations)),
            "history": self.history,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "since_best": self.since_best,
            "train_seconds": round(self.seconds, 2),
            "train_cpu_seconds": round(self.cpu_seconds, 2),
            "interrupted": interrupted,
            "charset": self.p.charset,
            "model_config": self.p.model_config.to_dict(),
            "preprocess": self.p.recipe,
            "epochs": self.o.epochs,
            "ema": self.o.ema,
        }
        report.write_json(self.o.out / CHECKPOINT_DIR / "state.json", state)


def load_state(out: Path, p: Prepared, ema: float = 0.0) -> Dict[str, Any]:
    """Read ``RUN/checkpoint/state.json`` for ``--resume`` and check it matches this run
    (``ema``: this run's ``--ema``; the averages are optimizer variables in the checkpoint)."""
    path = out / CHECKPOINT_DIR / "state.json"
    if not path.is_file() or not (out / CHECKPOINT_DIR / "last.weights.h5").is_file():
        raise TrainDataError(f"--resume: no checkpoint in {out / CHECKPOINT_DIR} "
                             "(train once without --resume first)")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TrainDataError(f"--resume: {path} is unreadable ({exc})") from None
    for key, now in (("charset", p.charset), ("model_config", p.model_config.to_dict()),
                     ("preprocess", p.recipe)):
        if state.get(key) != now:
            raise TrainDataError(f"--resume: the checkpoint was trained with a different {key} "
                                 f"({state.get(key)!r} vs {now!r}); repeat the original options")
    before = float(state.get("ema", 0.0))  # checkpoints older than --ema had none
    if before != ema:
        raise TrainDataError(f"--resume: the checkpoint was trained with --ema {before:g}, not "
                             f"{ema:g}; repeat the original options")
    return dict(state)


def warm_start(inference: Any, src: WarmStart, charset: str, keras: Any) -> str:
    """Copy an earlier run's weights into ``inference`` (``--init-from``); return a summary.

    Layers are matched by name and shape. With a new charset the output layer ("logits") keeps
    the rows of the characters both charsets share (and the blank) and starts the others fresh.
    """
    try:
        source = keras.models.load_model(str(src.weights), compile=False)
    except (OSError, ValueError) as exc:
        raise TrainDataError(f"--init-from {src.weights}: cannot load the model ({exc})") from None
    copied, fresh = 0, []
    for layer in inference.layers:
        mine = layer.get_weights()
        if not mine:
            continue
        try:
            theirs = source.get_layer(layer.name).get_weights()
        except ValueError:
            fresh.append(layer.name)
            continue
        if layer.name in ("logits", "logits_skip") and src.charset != charset:
            if mine[0].shape[0] != theirs[0].shape[0]:  # kernel (in, C): another input width
                fresh.append(layer.name)
                continue
            index = {c: i for i, c in enumerate(src.charset)}
            shared = [(j, index[c]) for j, c in enumerate(charset) if c in index]
            for j, i in shared + [(len(charset), len(src.charset))]:  # blank is last in both
                for w_new, w_old in zip(mine, theirs):  # kernel (in, C), bias (C,) if any
                    w_new[..., j] = w_old[..., i]
            layer.set_weights(mine)
            fresh.append(f"{layer.name}: {len(charset) - len(shared)} new of {len(charset)} "
                         "symbols")
            continue
        if [w.shape for w in mine] != [w.shape for w in theirs]:
            fresh.append(layer.name)
            continue
        layer.set_weights(theirs)
        copied += 1
    return f"{copied} layers copied" + (f"; fresh: {', '.join(fresh)}" if fresh else "")


def swap_ema_weights(optimizer: Any) -> None:
    """Swap each trainable weight with its moving average (Adam's ``use_ema``); a second call
    swaps them back. Keras' own SwapEMAWeights callback swaps only around ``evaluate``/epochs of
    ``fit``; the tracker evaluates itself, so it swaps with this."""
    for var, avg in zip(optimizer._trainable_variables, optimizer._model_variables_moving_average):
        if avg is not None:
            live = var.numpy()
            var.assign(avg)
            avg.assign(live)


def execution_steps(steps_per_epoch: int, wanted: int) -> int:
    """Steps per execution for an epoch of ``steps_per_epoch`` steps: ``wanted``, or 1 for
    epochs under 8 executions (their rounding up to whole executions would add over an eighth).

    Several steps a call skip the Python between steps (the schedule callback, which reads the
    step count from the graph, and Keras' step bookkeeping): with 8, the conv-head graphs at
    240x64 grey trained 1.27x (s2) and 1.12x (s4) the images per CPU-second in one run
    (scripts/bench_train_speed.py, ``-spe8`` configs; 1.05-1.07x without the callback). The
    learning rate is set and the budget checked once per call, so a run may pass its budget by
    up to ``wanted - 1`` steps."""
    return wanted if wanted > 1 and steps_per_epoch >= 8 * wanted else 1


def epoch_line(epoch: int, o: Options, used_seconds: float) -> str:
    """The line before epoch ``epoch`` (0-based): "Epoch 3/40", or with a time budget
    "Epoch 3 (4.2 of 30 CPU-min spent)" ("Epoch 3/40 (...)" when --epochs may end it first)."""
    text = f"Epoch {epoch + 1}" + ("" if o.epochs_cap and o.max_minutes else f"/{o.epochs}")
    if o.max_minutes:
        unit = "CPU-min" if o.budget_clock == "cpu" else "min"
        text += f" ({used_seconds / 60:.1f} of {o.max_minutes:g} {unit} spent)"
    return text


def train(p: Prepared, o: Options) -> Tuple[Dict[str, Any], int]:
    """Train, write the run folder, return ``(metrics, exit_code)`` (130 after Ctrl-C).

    Keras' dtype policy is process-wide: the one in force before is put back afterwards, so a
    notebook's or test's later models are not built in ``mixed_float16``."""
    state = load_state(o.out, p, o.ema) if o.resume else {}
    strategy, gpu, policy_before = configure_tensorflow(o.threads, o.seed, o.mixed_precision)
    import keras

    try:
        return _fit(p, o, state, strategy, gpu)
    finally:
        keras.mixed_precision.set_global_policy(policy_before)


def _fit(p: Prepared, o: Options, state: Dict[str, Any], strategy: Any, gpu: bool
         ) -> Tuple[Dict[str, Any], int]:
    """:func:`train`'s body, TensorFlow configured."""
    import keras

    max_len = p.max_label_length
    from .data import encode_labels

    tr_codes, tr_len = encode_labels(p.train_labels, p.charset, max_len)
    va_codes, va_len = encode_labels(p.val_labels, p.charset, max_len)
    train_targets = pack_targets(tr_codes, tr_len)
    val_targets = pack_targets(va_codes, va_len)

    passes = max(1, -(-len(p.train_images) // o.batch_size))
    steps_per_epoch = max(passes, o.min_epoch_steps)
    spe = execution_steps(steps_per_epoch, o.steps_per_execution)
    steps_per_epoch = -(-steps_per_epoch // spe) * spe  # Keras runs whole executions only
    total_steps = steps_per_epoch * o.epochs
    warmup = min(int(o.warmup_epochs * steps_per_epoch) if o.warmup_epochs is not None
                 else o.warmup_steps, total_steps // 2)
    schedule = BudgetSchedule(peak=o.learning_rate, total_steps=total_steps, warmup_steps=warmup,
                              budget_seconds=o.max_minutes * 60)
    with strategy.scope():
        train_model, inference = build_model(p.model_config, keras)
        # A plain variable, set before every step by the callback below from the step count and
        # the time spent (see BudgetSchedule), so the decay ends when the budget does.
        optimizer = keras.optimizers.Adam(learning_rate=schedule(0, 0.0), clipnorm=5.0,
                                          use_ema=o.ema > 0,
                                          ema_momentum=o.ema if o.ema > 0 else 0.99)
        train_model.compile(optimizer=optimizer, loss=ctc_loss, steps_per_execution=spe)
    initial_epoch = 0
    best_weights = None
    if state:
        # Build the optimizer first: the weights file also holds Adam's moments and step count,
        # so a resumed run continues exactly where the schedule left off.
        train_model.optimizer.build(train_model.trainable_variables)
        best_file = o.out / CHECKPOINT_DIR / "best.weights.h5"
        if best_file.is_file():
            train_model.load_weights(str(best_file))
            best_weights = train_model.get_weights()
        train_model.load_weights(str(o.out / CHECKPOINT_DIR / "last.weights.h5"))
        train_model.optimizer.iterations.assign(int(state["step"]))
        initial_epoch = int(state["next_epoch"])
    elif p.init_from is not None:
        copied = warm_start(inference, p.init_from, p.charset, keras)
        if o.verbose:
            print(f"warm start from {p.init_from.weights}: {copied}", flush=True)
    if o.verbose:
        print(f"model: {inference.count_params():,} parameters, {p.model_config.time_steps} "
              f"frames, {'GPU' if gpu else 'CPU'}"
              f"{', mixed precision' if keras.mixed_precision.global_policy().name != 'float32' else ''}"
              f"{f', {strategy.num_replicas_in_sync} replicas' if strategy.num_replicas_in_sync > 1 else ''}",
              flush=True)

    tracker = _Tracker(p, o, train_model, val_targets, state)
    tracker.best_weights = best_weights
    if o.ema > 0:
        tracker.swap_ema = lambda: swap_ema_weights(train_model.optimizer)
    tracker.progress = lambda: schedule.progress(int(train_model.optimizer.iterations.numpy()),
                                                 tracker.budget_used)

    class _Callback(keras.callbacks.Callback):  # type: ignore[misc]  # Keras is untyped
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            tracker.on_epoch_begin()

        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            step = int(self.model.optimizer.iterations.numpy())
            used = tracker.budget_used
            self.model.optimizer.learning_rate.assign(schedule(step, used))
            if step > 0 and schedule.progress(step, used) >= 1.0:
                self.model.stop_training = True  # Keras ends the epoch after this execution

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if tracker.on_epoch_end(epoch, logs if logs is not None else {}):
                self.model.stop_training = True

    class _Progbar(keras.callbacks.ProgbarLogger):  # type: ignore[misc]
        """Keras' progress bar; its epoch line counts the budget when the epochs only cap it."""

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            epochs: int = getattr(self, "epochs")
            self.epochs = 1  # Keras prints its "Epoch i/N" only when N > 1
            try:
                super().on_epoch_begin(epoch, logs)
            finally:
                self.epochs = epochs
            if self.verbose:
                print(epoch_line(epoch, o, tracker.budget_used), flush=True)

    # Augmentation waits until the model first reads --augment-from of the validation set:
    # measured on swust, augmenting from the first step kept CTC on its all-blank plateau for
    # the whole budget (0 % after 7 epochs) where the same run without it read 87 % by epoch 3.
    gate = None
    if o.augment is not None and o.augment_from > 0:
        import tensorflow as tf

        reached = tracker.best is not None and tracker.best["val_seq_acc"] >= o.augment_from
        gate = tf.Variable(1.0 if reached else 0.0, trainable=False, name="augment_gate")
        tracker.augment_gate = gate
    # Repeated, so an epoch of more steps than one pass reshuffles and goes on (small sets).
    ds = make_dataset(p.train_images, train_targets, o.batch_size, o.seed, o.augment,
                      gate).repeat()
    interrupted = False
    exit_code = 0
    if initial_epoch < o.epochs and not state.get("finished"):
        try:
            train_model.fit(ds, epochs=o.epochs, initial_epoch=initial_epoch,
                            steps_per_epoch=steps_per_epoch,
                            callbacks=[_Callback(), _Progbar()],
                            shuffle=False,  # tf.data shuffles
                            verbose=(1 if sys.stdout.isatty() else 2) if o.verbose else 0)
        except KeyboardInterrupt:
            interrupted = True
            exit_code = 130
            done = tracker.history[-1]["epoch"] if tracker.history else initial_epoch
            tracker.save_checkpoint(next_epoch=done, interrupted=True)
            print(f"\ninterrupted: checkpoint saved in {o.out / CHECKPOINT_DIR}; continue with "
                  "the same command plus --resume", file=sys.stderr, flush=True)
    if tracker.stop_reason and o.verbose:
        print(tracker.stop_reason, flush=True)
    if tracker.best_weights is not None:
        train_model.set_weights(tracker.best_weights)
    return finish(p, o, train_model, inference, tracker, val_targets, interrupted), exit_code


def finish(p: Prepared, o: Options, train_model: Any, inference: Any, tracker: _Tracker,
           val_targets: np.ndarray, interrupted: bool) -> Dict[str, Any]:
    """Write model.keras, model.json, history.csv, curves.png, samples.png, metrics.json."""
    import keras

    metrics, preds = evaluate(train_model, p.val_images, p.val_labels, val_targets, p.charset)
    report.atomic_write(o.out / "model.keras", lambda t: inference.save(str(t)), ".keras")
    cfg = p.model_config
    RunInfo(
        charset=p.charset, blank=len(p.charset), preprocess=p.recipe,
        input_shape=(cfg.height, cfg.width, cfg.channels), time_steps=cfg.time_steps,
        max_label_length=p.max_label_length, model_config=cfg,
        min_label_length=min(len(x) for x in [*p.train_labels, *p.val_labels]),
        data=p.meta.get("data") or {}, split=p.meta.get("split"),
        val_files=tuple(p.val_names), train_files=tuple(p.train_names),
        package_version=package_version(), keras="keras3", keras_version=keras.__version__,
        mixed_precision=keras.mixed_precision.global_policy().name, seed=o.seed,
        # cli.prepare's other facts (input_choice: the auto geometry/colour and why; init_from)
        extra={k: v for k, v in p.meta.items() if k not in ("data", "split")},
    ).write(o.out / "model.json")
    if tracker.history:
        report.write_history(o.out / "history.csv", tracker.history)
        report.plot_curves(o.out / "curves.png", tracker.history)
    report.plot_samples(o.out / "samples.png", p.val_images, p.val_labels, preds)
    wrong = [{"file": n, "truth": t, "pred": q}
             for n, t, q in zip(p.val_names, p.val_labels, preds) if t != q]
    out = {
        "val_seq_acc": metrics["val_seq_acc"],
        "val_cer": metrics["val_cer"],
        "val_loss": metrics["val_loss"],
        "val_count": len(p.val_labels),
        "train_count": len(p.train_labels),
        "best_epoch": tracker.best_epoch,
        "epochs_run": tracker.history[-1]["epoch"] if tracker.history else 0,
        "train_seconds": round(tracker.seconds, 2),
        "train_cpu_seconds": round(tracker.cpu_seconds, 2),
        "stop_reason": tracker.stop_reason or ("interrupted" if interrupted else "epochs done"),
        "interrupted": interrupted,
        "confusions": ctc.confusions(p.val_labels, preds),
        "errors": wrong[:100],
        "parameters": int(inference.count_params()),
    }
    report.write_json(o.out / "metrics.json", out)
    return out
