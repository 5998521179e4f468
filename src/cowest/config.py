"""Typed run configuration: YAML recipes plus ``key=value`` overrides, validated on load.

A recipe is a YAML mapping whose sections mirror the dataclasses below::

    name: demo
    task: {name: demo, n_train: 48, n_eval: 32}
    weak: {model: offline:smollm2-135m-instruct}
    strong: {local: {gguf: offline:qwen2.5-coder-1.5b-instruct}}

Overrides use dotted keys and YAML values: ``cowest eval recipes/demo.yaml task.n_eval=8
strong.max_concurrency=4 eval.systems=[weak,strong]``. An unknown key, a wrong type, or a bad value is
a :class:`~cowest.errors.ConfigError` naming the key and the valid choices. The resolved config is
saved with each run; it never holds secrets (API keys are read from the environment variable that
``strong.api_key_env`` names, at call time).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cowest.errors import ConfigError
from cowest.typed import at_least as _at_least, choice as _choice, from_dict, positive as _positive, set_dotted

FORMATS = ("direct", "knowledge", "cot")
REPORT_TO = ("none", "tensorboard", "wandb", "trackio")  # TRL/transformers logging integrations
SYSTEMS = ("weak", "strong", "superICL", "collab", "cowest", "routed", "random_gate")
# what `eval` runs unless eval.systems says otherwise: the gated systems need a calibration (gate section) first
DEFAULT_SYSTEMS = ("weak", "strong", "superICL", "collab", "cowest")
GATE_SCORES = ("answer_prob", "agreement", "seq_logprob")


def _report_to(section: str, value: str | list[str]) -> None:
    names = [value] if isinstance(value, str) else list(value)
    if not names:
        raise ConfigError(f"{section}.report_to: an empty list; use none, or some of: {', '.join(REPORT_TO[1:])}")
    for n in names:
        _choice(f"{section}.report_to", n, REPORT_TO)
    if "none" in names and len(names) > 1:
        raise ConfigError(f"{section}.report_to: none cannot be combined with {', '.join(n for n in names if n != 'none')}")


@dataclass
class TaskConfig:
    """Which task, where its data lives, and how much of it to use."""

    name: str = "demo"  # ifqa | medmcqa | prosocial_dialog | jsonl | demo
    data: str | None = None  # local dir or file; None = hub (or the embedded demo task)
    train_split: str = "train"
    eval_split: str = "dev"
    n_train: int | None = None  # first N after a seeded shuffle; None = all
    n_eval: int | None = None
    heldout_from: int | None = None  # where held-out questions (validate, gate, probe) start in it; None: n_train
    format: str = "cot"  # interaction format: direct | knowledge | cot
    # `jsonl` task only: field names and metric of a user's own task.
    question_field: str = "question"
    answer_field: str = "answer"
    choices_field: str | None = None
    id_field: str | None = None
    rationale_field: str | None = None
    metric: str = "em_f1"  # em_f1 | accuracy

    def __post_init__(self) -> None:
        _choice("task.format", self.format, FORMATS)
        _choice("task.metric", self.metric, ("em_f1", "accuracy"))
        for k in ("n_train", "n_eval"):
            if getattr(self, k) is not None:
                _at_least(f"task.{k}", getattr(self, k), 1, note=" or null")
        if self.heldout_from is not None and (self.n_train is None or self.heldout_from < self.n_train):
            raise ConfigError(f"task.heldout_from={self.heldout_from} must be >= task.n_train ({self.n_train}): "
                              "the held-out questions come after the training ones in the seeded shuffle")


@dataclass
class WeakConfig:
    """The small model we fine-tune: hub id, local dir, GGUF file, or an ``offline:`` alias."""

    model: str = "offline:smollm2-135m-instruct"
    gguf_file: str | None = None  # file name inside `model` when it is a GGUF repo/dir
    adapter: str | None = None  # a PEFT adapter to load on top (overrides the run's SFT adapter)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16 (auto: bf16 where the GPU/CPU has it natively)
    # prompts per generate() call (each with K samples), sequences per scoring call. 64 drafts 1.3x faster in bf16
    # on CPU but a bf16 forward over 64 long rows peaks ~2 GB higher (bench/RESULTS.md), so 16 keeps the demo small
    batch_size: int = 16
    max_batch_tokens: int = 65536  # cap on rows x (padded prompt + new tokens) per call: bounds the KV cache
    max_new_tokens: int = 128
    max_prompt_tokens: int = 768
    # drafting in eval and serve (0 = greedy). Feedback samples its K drafts with feedback.temperature/top_p.
    temperature: float = 0.0
    top_p: float = 1.0
    backend: str = "transformers"  # transformers | vllm
    threads: int | None = None  # torch CPU threads; None = torch's default

    def __post_init__(self) -> None:
        _choice("weak.backend", self.backend, ("transformers", "vllm"))
        _choice("weak.dtype", self.dtype, ("auto", "float32", "bfloat16", "float16"))
        _positive("weak.batch_size", self.batch_size)
        _positive("weak.max_batch_tokens", self.max_batch_tokens)
        _positive("weak.max_new_tokens", self.max_new_tokens)


@dataclass
class LocalServerConfig:
    """A local strong-model server that cowest starts and stops (cowest.models.local_server)."""

    gguf: str | None = None  # path or offline alias; None = no managed server
    engine: str = "auto"  # auto | batch (cowest's batched decode, bf16) | llama.cpp (the [local] extra)
    host: str = "127.0.0.1"
    port: int = 0  # 0 = pick a free port
    n_ctx: int = 4096
    threads: int | None = None  # llama.cpp generation threads (None: physical cores) / batch engine
    parallel: int = 32  # requests decoded together (strong.max_concurrency's cap); llama.cpp: 1 = its one-slot server
    batching: str = "continuous"  # batch engine: continuous (greedy requests join the running batch) | static
    kv_tokens: int = 16384  # continuous batching: KV cache slots over all running requests (the memory bound)
    dtype: str = "auto"  # batch engine: auto (as weak.dtype) | bfloat16 | float32 | int8 (weights: half of bf16)
    startup_timeout_s: float = 300.0
    extra_bufts: str = "auto"  # llama.cpp's AMX/repacking buffers; auto: off where they crash (models/llama_build.py);
    # with parallel > 1 (models/llama_batch.py) auto is off: repacked kernels made batched steps slower

    def __post_init__(self) -> None:
        _choice("strong.local.extra_bufts", self.extra_bufts, ("auto", "on", "off"))
        _choice("strong.local.engine", self.engine, ("auto", "batch", "llama.cpp"))
        _positive("strong.local.parallel", self.parallel)
        _choice("strong.local.batching", self.batching, ("continuous", "static"))
        _at_least("strong.local.kv_tokens", self.kv_tokens, 64, note=" (four KV pages)")
        _choice("strong.local.dtype", self.dtype, ("auto", "bfloat16", "float32", "int8"))


@dataclass
class StrongConfig:
    """The black-box strong model behind an OpenAI-compatible chat endpoint."""

    base_url: str = "http://127.0.0.1:8080/v1"
    model: str = "strong"
    api_key_env: str | None = "OPENAI_API_KEY"  # NAME of the env var; the key itself is never stored
    temperature: float = 0.0
    max_tokens: int = 256
    max_concurrency: int = 8
    timeout_s: float = 120.0
    max_retries: int = 6
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    rpm: int | None = None  # requests per minute limit, None = unlimited
    tpm: int | None = None  # tokens per minute limit
    cache: bool = True
    cache_path: str | None = None  # default: <output_dir>/strong_cache.sqlite
    price_prompt_per_1k: float = 0.0  # USD per 1k prompt tokens, for the cost column
    price_completion_per_1k: float = 0.0
    local: LocalServerConfig = field(default_factory=LocalServerConfig)

    def __post_init__(self) -> None:
        _positive("strong.max_concurrency", self.max_concurrency)
        _positive("strong.max_tokens", self.max_tokens)
        _at_least("strong.max_retries", self.max_retries, 0)


@dataclass
class SFTConfig:
    """Supervised fine-tuning of the weak model on the task's training split (TRL SFTTrainer)."""

    lora: bool = True  # False = full fine-tuning
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: str | list[str] = "all-linear"
    epochs: float = 3.0
    max_steps: int = -1
    learning_rate: float = 2e-4
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_length: int = 512
    cot_targets: str = "auto"  # auto | dataset | strong | direct: where `cot` rationales come from
    bf16: bool | str = "auto"  # auto: where the GPU/CPU runs bf16 natively (cowest.training.resolve_bf16)
    fp16: bool = False
    gradient_checkpointing: bool = False
    load_in_4bit: bool = False  # QLoRA (bitsandbytes, CUDA only)
    logging_steps: int = 5
    # where the trainer's logs also go: none | tensorboard | wandb | trackio, or a list (off by default: offline)
    report_to: str | list[str] = "none"
    seed: int = 0

    def __post_init__(self) -> None:
        _choice("sft.cot_targets", self.cot_targets, ("auto", "dataset", "strong", "direct"))
        _choice("sft.bf16", self.bf16, (True, False, "auto"))
        _report_to("sft", self.report_to)


@dataclass
class FeedbackConfig:
    """Collaborative feedback: K weak drafts per question, scored against the strong model alone."""

    max_questions: int | None = None  # feedback on the first N (seeded) SFT training questions; None = all
    # + N training-split questions SFT never saw, never held-out ones (tasks.splits.extra_train_examples)
    extra_questions: int = 0
    k: int = 4
    temperature: float = 1.0
    top_p: float = 0.95
    evaluator: str = "metric"  # metric | judge | both | likelihood (choice tasks: p(gold option), graded)
    metric: str = "auto"  # the `metric` score: auto (token F1 free-form, else correctness) | f1 | em | accuracy
    judge_base_url: str | None = None  # None = the strong endpoint
    judge_model: str | None = None
    judge_weight: float = 0.5  # weight of the judge score in `both` (metric weight = 1 - this)
    z_samples: int = 1  # draws of the strong model alone; Δ is against their mean
    z_temperature: float = 0.7  # used when z_samples > 1
    pairing: str = "all"  # all | best_worst | as_well | label_balanced | ranked: see cowest.feedback.pairs
    min_margin: float = 0.0  # a pair needs Δ⁺ - Δ⁻ >= this
    max_pairs_per_question: int = 4
    max_pairs: int | None = None

    def __post_init__(self) -> None:
        _positive("feedback.k", self.k)
        _at_least("feedback.extra_questions", self.extra_questions, 0)
        _positive("feedback.z_samples", self.z_samples)
        _choice("feedback.evaluator", self.evaluator, ("metric", "judge", "both", "likelihood"))
        _choice("feedback.metric", self.metric, ("auto", "f1", "em", "accuracy"))
        _choice("feedback.pairing", self.pairing, ("all", "best_worst", "as_well", "label_balanced", "ranked"))


@dataclass
class AlignConfig:
    """DPO of the weak model on the preference pairs (TRL DPOTrainer), reference = the SFT model."""

    beta: float = 0.1
    loss_type: str = "sigmoid"
    # weight of the chosen drafts' NLL beside the preference loss (TRL loss_type [.., "sft"]; RPO): DPO alone can
    # make the chosen drafts less likely too, and a small model then fails to stop after its answer; 0 = DPO alone
    sft_weight: float = 0.0
    learning_rate: float = 5e-5
    epochs: float = 2.0
    max_steps: int = -1
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    max_length: int = 768
    precompute_ref_log_probs: bool = True  # one reference pass up front, none per step (1.4x faster steps on CPU)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    bf16: bool | str = "auto"  # as sft.bf16
    fp16: bool = False
    gradient_checkpointing: bool = False
    logging_steps: int = 1
    report_to: str | list[str] = "none"  # as sft.report_to
    # share of the feedback questions (with all their pairs) held out of training to measure DPO on; 0 = none
    eval_share: float = 0.0
    # held-out training-split questions on which each round's aligned drafts are compared with the SFT drafts
    # (the alignment gain, `cowest validate`; run after each align round by `cowest run`); 0 = off
    validation_questions: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        _choice("align.bf16", self.bf16, (True, False, "auto"))
        if self.sft_weight < 0 or (self.sft_weight and self.loss_type == "sft"):
            raise ConfigError(f"align.sft_weight must be >= 0 (0 = DPO alone) beside a preference loss_type, got "
                              f"{self.sft_weight} with loss_type {self.loss_type!r}")
        _at_least("align.validation_questions", self.validation_questions, 0, note=" (0 = off)")
        _report_to("align", self.report_to)
        if not 0.0 <= self.eval_share < 1.0:
            raise ConfigError(f"align.eval_share must be in [0, 1) (a share of the feedback questions), got {self.eval_share}")


@dataclass
class EvalConfig:
    """Which systems to compare, side by side on the same questions."""

    systems: list[str] = field(default_factory=lambda: list(DEFAULT_SYSTEMS))

    def __post_init__(self) -> None:
        for s in self.systems:
            _choice("eval.systems", s, SYSTEMS)


@dataclass
class GateConfig:
    """The confidence gate (eval's ``routed`` system, ``cowest serve`` with ``serve.gate``): a weak draft whose
    confidence is below the threshold goes to the strong model, the rest are answered by the weak model alone.
    The threshold is calibrated on training questions the run never trained on (never the eval split)."""

    score: str = "auto"  # auto (the best AUROC on the calibration questions) | answer_prob | agreement | seq_logprob
    strong_share: float = 0.5  # target share of questions sent to the strong model
    calibration_questions: int = 100  # held-out training questions (tasks.splits.heldout_train_examples)
    agreement_k: int = 4  # sampled drafts per question for the `agreement` score
    agreement_temperature: float = 1.0

    def __post_init__(self) -> None:
        _choice("gate.score", self.score, ("auto", *GATE_SCORES))
        _positive("gate.calibration_questions", self.calibration_questions)
        _positive("gate.agreement_k", self.agreement_k)
        if not 0.0 <= self.strong_share <= 1.0:
            raise ConfigError(f"gate.strong_share must be in [0, 1] (a share of the questions), got {self.strong_share}")
        if self.agreement_temperature <= 0:
            raise ConfigError(f"gate.agreement_temperature must be > 0 (sampled drafts), got {self.agreement_temperature}")


@dataclass
class ServeConfig:
    """``cowest serve``: each key is also a command-line flag (``--max-queue`` for ``max_queue``), which wins."""

    host: str = "127.0.0.1"  # loopback unless you mean to expose it
    port: int = 8000  # 0 = pick a free one (printed at start)
    api_key_env: str | None = None  # NAME of the env var holding the bearer key clients must send; None = no auth
    max_concurrency: int | None = None  # collaborations in progress at once; None = strong.max_concurrency
    max_queue: int | None = None  # requests that may wait for a slot (more get 429); None = 4 x concurrency
    max_body_bytes: int = 1 << 20  # larger request bodies get 413
    show_draft: bool = False  # return the weak draft with every response (else only when the request asks)
    model_name: str | None = None  # the model id clients send; None = the run's name
    prompt: str = "auto"  # auto (task prompts when the recipe names a task) | task | generic
    shutdown_timeout_s: float = 60.0  # seconds in-flight requests get after SIGTERM/Ctrl-C
    log_level: str = "info"  # uvicorn's
    # answer confident drafts with the weak model alone (the run's calibrated gate: gate/gate.json), the rest collaborate
    gate: bool = False

    def __post_init__(self) -> None:
        _choice("serve.prompt", self.prompt, ("auto", "task", "generic"))
        _positive("serve.max_body_bytes", self.max_body_bytes)
        if self.max_concurrency is not None:
            _positive("serve.max_concurrency", self.max_concurrency)
        if self.max_queue is not None:
            _at_least("serve.max_queue", self.max_queue, 0)
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"serve.port must be 0-65535, got {self.port}")


@dataclass
class RunConfig:
    """Everything one run needs. ``runs/<name>/`` holds its artifacts."""

    name: str = "demo"
    output_dir: str = "runs"
    seed: int = 0
    rounds: int = 1  # feedback+align rounds; round r drafts with round r-1's model
    task: TaskConfig = field(default_factory=TaskConfig)
    weak: WeakConfig = field(default_factory=WeakConfig)
    strong: StrongConfig = field(default_factory=StrongConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)

    def __post_init__(self) -> None:
        _positive("rounds", self.rounds)
        if not self.name or "/" in self.name:
            raise ConfigError(f"name must be a non-empty directory name, got {self.name!r}")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# loading ------------------------------------------------------------------------------------------


def load_config(recipe: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML recipe (optional), apply dotted ``key=value`` overrides, validate."""
    data: dict[str, Any] = {}
    if recipe is not None:
        path = Path(recipe)
        if not path.is_file():
            raise ConfigError(f"recipe not found: {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            what = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(f"{where}: not valid YAML: {what}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a recipe must be a YAML mapping")
    return from_dict(RunConfig, _apply_overrides(data, overrides), prefix="")


def with_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """A copy of ``cfg`` with dotted ``key=value`` overrides applied and validated, as ``load_config`` does."""
    return from_dict(RunConfig, _apply_overrides(cfg.to_dict(), overrides), prefix="")


def _apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        set_dotted(data, key.strip(), value)
    return data


def dump_config(cfg: RunConfig) -> str:
    """YAML of the resolved config (holds env var *names* only, never secret values)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
