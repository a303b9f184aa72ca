"""Task files: a task declared in one YAML file (model, data, templates, evaluation, forgetting, defaults).

This module parses and checks a task file without loading any model: every problem is a ConfigError
naming the file and the key. The Task that runs it is peftbench.tasks.declared.DeclaredTask; the format
is documented in docs/custom-task.md. The keys follow lm-evaluation-harness's task YAML where the ideas
coincide (`task`, `doc_to_text`, `doc_to_target`, `doc_to_choice`, `output_type`, `target_delimiter`,
`generation_kwargs.until` / `max_gen_toks`, `metric_list`), and templates may be written with `{field}`
or, as in lm-eval, in Jinja (`{{field}}`).
"""

from __future__ import annotations

import difflib
import hashlib
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from peftbench.config import ConfigError, check_keys, read_untrusted_text

TASK_FILE_SUFFIXES = (".yaml", ".yml")
OUTPUT_TYPES = ("generate_until", "multiple_choice")
SPLITS = ("train", "valid", "test")
# `model: builtin:tiny-math-llama` names the tiny model shipped in the package (offline).
BUILTIN_MODEL_PREFIX = "builtin:"
BUILTIN_MODELS = ("tiny-math-llama",)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "vocab.txt")
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
FORGETTING_CHOICES = ("default", "none")
FORGETTING_FORMULAS = ("next_token", "peft_suite")  # see peftbench.tasks.text
# Training parameters that a task file may not set: the task file's own keys declare them (their defaults are
# those keys' values; a run may still replace a source with --set train_data=FILE).
DECLARED_ELSEWHERE = {
    "model_id": "model", "train_data": "data.train", "valid_data": "data.valid", "test_data": "data.test",
    "forgetting_data": "forgetting",
}
TOP_LEVEL_KEYS = (
    "task", "model", "data", "doc_to_text", "doc_to_target", "output_type", "doc_to_choice", "target_delimiter",
    "apply_chat_template", "system_instruction", "metric", "metric_args", "metric_list", "generation_kwargs",
    "forgetting", "forgetting_loss", "score_name", "training_params", "harness_tasks", "harness_include_path",
    "harness_limit",
)
# lm-eval keys that mean something else here, with what to write instead.
LM_EVAL_HINTS = {
    "dataset_path": "use data: {train: FILE, valid: FILE, test: FILE}",
    "dataset_kwargs": "use data: {train: FILE, valid: FILE, test: FILE}",
    "training_split": "use data.train", "validation_split": "use data.valid", "test_split": "use data.test",
    "num_fewshot": "few-shot prompts are not supported; put examples into doc_to_text",
}
DATA_KEYS = ("train", "valid", "test", "file", "split", "seed")
# A source given as a mapping: {path: FILE or hub id, ...}; the options apply to that source's rows in this order.
SOURCE_KEYS = ("path", "name", "split", "rename", "keep_if", "shuffle_seed")


def is_task_file(name: str) -> bool:
    """Whether a --task value names a task file rather than a registered task."""
    return name.lower().endswith(TASK_FILE_SUFFIXES) or Path(name).is_file()


def shipped_task_file(name: str) -> Path:
    """The task file of a task shipped in the package (tasks/files/<name>.yaml), e.g. `math`."""
    from importlib.resources import files

    return Path(str(files("peftbench") / "tasks" / "files" / f"{name}.yaml"))


def builtin_model_path(name: str) -> Path:
    from importlib.resources import files

    return Path(str(files("peftbench") / "assets" / name))


# ---- templates ----
@dataclass(frozen=True)
class Template:
    """A `{field}` (str.format) or Jinja (`{{field}}`, as lm-eval) template, or the bare name of a field."""

    text: str
    key: str  # the task-file key it came from, for errors
    fields: frozenset[str]
    render_with: Callable[[dict[str, Any]], str]

    def render(self, row: dict[str, Any]) -> str:
        return self.render_with(row)


def parse_template(text: Any, key: str, source: Path, columns: Optional[set[str]] = None) -> Template:
    """A template for key `key`. A string that is exactly a column name means that field (as in lm-eval)."""
    if not isinstance(text, str) or not text:
        raise ConfigError(f"{source}: '{key}' must be a non-empty string (a template with {{field}} placeholders)")
    if columns is not None and text in columns:
        return Template(text, key, frozenset([text]), lambda row: str(_FieldsWithValues(row)[text]))
    if "{{" in text or "{%" in text:
        import jinja2
        from jinja2 import meta
        from jinja2.sandbox import SandboxedEnvironment

        environment = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                           finalize=_refuse_null)
        try:
            fields = meta.find_undeclared_variables(environment.parse(text))
            compiled = environment.from_string(text)
        except jinja2.TemplateSyntaxError as error:
            raise ConfigError(f"{source}: '{key}' is not a valid Jinja template: {error}") from None
        return Template(text, key, frozenset(fields), lambda row: compiled.render(**row))
    try:
        fields = {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as error:
        raise ConfigError(f"{source}: '{key}' is not a valid template ({error}); write a literal brace as {{{{ or }}}}") from None
    if "" in fields or any(name.isdigit() for name in fields):
        raise ConfigError(f"{source}: '{key}' has a placeholder without a field name; write {{field}}")
    return Template(text, key, frozenset(fields), lambda row: text.format_map(_FieldsWithValues(row)))


class _FieldsWithValues(dict):
    """A row whose null fields cannot be rendered: `datasets` gives a row that leaves a field out that field as
    None, which would otherwise become the text "None" (and be trained on, and scored against)."""

    def __getitem__(self, name: str) -> Any:
        value = super().__getitem__(name)
        if value is None:
            raise ValueError(f"field {name!r} has no value (null, or absent from this row)")
        return value


def _refuse_null(value: Any) -> Any:
    """Jinja's finalize: what a template prints may not be null (a conditional on a null field is fine)."""
    if value is None:
        raise ValueError("the template prints a field that has no value (null, or absent from this row)")
    return value


# ---- the parsed file ----
@dataclass
class DataSpec:
    """Where each split comes from: a source per split, and splits carved from one source with a seed."""

    sources: dict[str, str]  # split -> file or hub id (train, valid, test, or "file")
    carve: dict[str, float]  # split -> fraction (< 1) or row count, taken from `file` (or train) with `seed`
    seed: int = 0
    # split -> the options of its source given as a mapping: name (hub config), split (hub split), rename
    # ({old: new} columns, where present), keep_if (a Jinja expression; rows where it is false are dropped),
    # shuffle_seed (the rows in numpy's np.random.seed(N); np.random.shuffle order, as the PEFT suite samples)
    options: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class TaskFile:
    path: Path
    sha256: str  # of the task file and every local file it names (data, scorer, forgetting text)
    name: str
    model: str  # a local folder (absolute) or a hub id
    data: DataSpec
    doc_to_text: Any  # raw template strings; parsed against the data's columns by the task
    doc_to_target: Any
    output_type: str
    doc_to_choice: Any
    target_delimiter: str
    apply_chat_template: bool
    system_instruction: Optional[str]
    metric: str
    metric_args: dict[str, Any]
    until: list[str]
    max_gen_toks: Optional[int]
    forgetting: str  # "default", "none", a local file (absolute) or a hub dataset id
    forgetting_formula: str  # see FORGETTING_FORMULAS
    score_name: Optional[str]  # the score's name in results; None: the metric's
    training_params: dict[str, Any]
    harness: dict[str, Any] = field(default_factory=dict)  # {tasks, include_path, limit} (evaluation/harness.py)

    @property
    def identity(self) -> str:
        """The task's name in result files: file name and content hash, so that results on different task
        files (or on one file before and after an edit) are never compared as one task."""
        return f"{self.path.name}@{self.sha256[:12]}"

    @property
    def is_local_model(self) -> bool:
        return Path(self.model).is_absolute()

    def local_files(self) -> list[Path]:
        from peftbench.tasks.base import is_local_source

        named = [Path(s) for s in self.data.sources.values() if is_local_source(s)]
        if self.forgetting not in FORGETTING_CHOICES and is_local_source(self.forgetting):
            named.append(Path(self.forgetting))
        scorer = scorer_file(self.metric, self.path.parent)
        return named + ([scorer] if scorer is not None else [])


def scorer_file(metric: str, base_dir: Path) -> Optional[Path]:
    """The .py file beside the task file that a `module:function` metric names, if there is one."""
    from peftbench.evaluation.scorers import scorer_path

    module, sep, _ = metric.partition(":")
    if not sep:
        return None
    candidate = scorer_path(module, base_dir)
    return candidate if candidate.is_file() else None


def _load_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        text = read_untrusted_text(path)
    except FileNotFoundError:
        raise ConfigError(f"task file not found: {path}") from None
    except OSError as error:
        raise ConfigError(f"task file {path} cannot be read: {error}") from None
    except ConfigError as error:
        raise ConfigError(f"task file {error}") from None
    try:
        data = yaml.safe_load(text)  # safe_load: a task file is data, never code
    except yaml.YAMLError as error:
        raise ConfigError(f"malformed YAML in task file {path}: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"task file {path} must hold a mapping of keys (task, model, data, doc_to_text, ...)")
    return data


def _check_top_level(data: dict[str, Any], path: Path) -> None:
    for key in data:
        if key in TOP_LEVEL_KEYS:
            continue
        if key in LM_EVAL_HINTS:
            raise ConfigError(f"{path}: key '{key}' (lm-eval) is not supported here: {LM_EVAL_HINTS[key]}")
        close = difflib.get_close_matches(str(key), TOP_LEVEL_KEYS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{path}: unknown key '{key}'.{hint} Valid keys: {', '.join(TOP_LEVEL_KEYS)}")
    for key in ("model", "data", "doc_to_text", "doc_to_target"):
        if key not in data:
            raise ConfigError(f"{path}: required key '{key}' is missing (see docs/custom-task.md)")


def _resolve_local(value: str, base_dir: Path) -> Path:
    """`value` as a path: relative ones are relative to the task file's folder."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    return path


def _parse_model(value: Any, path: Path) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{path}: 'model' must be a hub id (org/name) or a local folder")
    if value.startswith(BUILTIN_MODEL_PREFIX):
        name = value[len(BUILTIN_MODEL_PREFIX):]
        if name not in BUILTIN_MODELS:
            raise ConfigError(f"{path}: 'model': unknown built-in model {name!r}; valid: "
                              f"{', '.join(BUILTIN_MODEL_PREFIX + m for m in BUILTIN_MODELS)}")
        return str(builtin_model_path(name))
    local = _resolve_local(value, path.parent)
    if local.is_dir():
        return str(local.resolve())
    if value.startswith(("/", ".", "~")) or value.count("/") > 1 or local.exists():
        raise ConfigError(f"{path}: 'model': folder not found: {local} (give a local model folder or a hub id)")
    return value  # a hub id


def check_model_folder(model: str, apply_chat_template: bool, path: Path) -> None:
    """A local model folder has a tokenizer, and a chat template when the task asks for one."""
    folder = Path(model)
    if not folder.is_absolute():
        return  # a hub id: checked when it is downloaded
    if not any((folder / name).exists() for name in TOKENIZER_FILES):
        raise ConfigError(
            f"{path}: 'model': the folder {folder} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); "
            "save one beside the weights with tokenizer.save_pretrained"
        )
    if apply_chat_template and not has_chat_template(folder):
        raise ConfigError(
            f"{path}: 'apply_chat_template' is true but the tokenizer in {folder} has no chat template "
            f"(no 'chat_template' in tokenizer_config.json, no {' or '.join(CHAT_TEMPLATE_FILES)}); "
            "set apply_chat_template: false and write the prompt with doc_to_text"
        )


def has_chat_template(folder: Path) -> bool:
    import json

    if any((folder / name).exists() for name in CHAT_TEMPLATE_FILES):
        return True
    config = folder / "tokenizer_config.json"
    try:
        return bool(json.loads(read_untrusted_text(config)).get("chat_template"))
    except (OSError, ValueError, AttributeError, ConfigError):
        return False


def _parse_data(value: Any, path: Path) -> DataSpec:
    from peftbench.tasks.base import is_local_source

    if not isinstance(value, dict):
        raise ConfigError(
            f"{path}: 'data' must be a mapping: {{train: FILE, valid: FILE, test: FILE}} or "
            "{file: FILE, split: {valid: 0.1, test: 0.2}, seed: 0}"
        )
    for key in value:
        if key not in DATA_KEYS:
            raise ConfigError(f"{path}: unknown key 'data.{key}'; valid: {', '.join(DATA_KEYS)}")
    sources: dict[str, str] = {}
    options: dict[str, dict[str, Any]] = {}
    for key in ("train", "valid", "test", "file"):
        if key in value:
            source = value[key]
            if isinstance(source, dict):
                options[key] = _parse_source_options(source, f"data.{key}", path)
                source = source.get("path")
            if not isinstance(source, str) or not source:
                raise ConfigError(f"{path}: 'data.{key}' must be a file path or a hub dataset id "
                                  f"(or a mapping with 'path' and options: {', '.join(SOURCE_KEYS[1:])})")
            if is_local_source(source) or _resolve_local(source, path.parent).exists():
                local = _resolve_local(source, path.parent)
                if not local.exists():
                    raise ConfigError(f"{path}: 'data.{key}': file not found: {local}")
                source = str(local.resolve())
            sources[key] = source
    carve = value.get("split") or {}
    if not isinstance(carve, dict):
        raise ConfigError(f"{path}: 'data.split' must map split names to a fraction or a row count, e.g. {{test: 0.2}}")
    for split, amount in carve.items():
        if split not in ("valid", "test"):
            raise ConfigError(f"{path}: 'data.split.{split}': only valid and test are carved out; the rest is train")
        if split in sources:
            raise ConfigError(f"{path}: 'data.{split}' is both a file and carved by 'data.split'; give one")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount <= 0 or (
            isinstance(amount, float) and amount >= 1
        ):
            raise ConfigError(
                f"{path}: 'data.split.{split}' is {amount!r}; give a fraction in (0, 1) or a positive row count"
            )
    if "file" in sources and "train" in sources:
        raise ConfigError(f"{path}: 'data' has both 'file' and 'train'; with 'file', train is what 'split' leaves")
    if carve and "file" not in sources and "train" not in sources:
        raise ConfigError(f"{path}: 'data.split' needs 'data.file' (or 'data.train') to carve from")
    if "file" in sources and not carve:
        raise ConfigError(f"{path}: 'data.file' needs 'data.split', e.g. split: {{valid: 0.1, test: 0.2}}")
    if "train" not in sources and "file" not in sources:
        raise ConfigError(f"{path}: 'data.train' is missing (or give 'data.file' with 'data.split')")
    if "test" not in sources and "test" not in carve:
        raise ConfigError(f"{path}: 'data.test' is missing (a file, or a share of 'data.file' in 'data.split')")
    seed = value.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"{path}: 'data.seed' must be an integer")
    return DataSpec(sources=sources, carve=dict(carve), seed=seed, options=options)


def _parse_source_options(value: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    """The options of one data source written as a mapping (see DataSpec.options)."""
    for name in value:
        if name not in SOURCE_KEYS:
            raise ConfigError(f"{path}: unknown key '{key}.{name}'; valid: {', '.join(SOURCE_KEYS)}")
    options = {name: value[name] for name in SOURCE_KEYS[1:] if name in value}
    for name in ("name", "split"):
        if name in options and (not isinstance(options[name], str) or not options[name]):
            raise ConfigError(f"{path}: '{key}.{name}' must be a non-empty string")
    rename = options.get("rename", {})
    if not isinstance(rename, dict) or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in rename.items()):
        raise ConfigError(f"{path}: '{key}.rename' must map column names to new names, e.g. {{question: query}}")
    if "keep_if" in options:
        options["keep_if"] = parse_condition(options["keep_if"], f"{key}.keep_if", path)
    seed = options.get("shuffle_seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ConfigError(f"{path}: '{key}.shuffle_seed' must be a non-negative integer")
    return options


@dataclass(frozen=True)
class Condition:
    """A Jinja expression over a row's fields (sandboxed, as templates), e.g. `(query ~ ' ' ~ response)|length <= 1300`."""

    text: str
    key: str
    fields: frozenset[str]
    evaluate: Callable[[dict[str, Any]], Any]


def parse_condition(text: Any, key: str, source: Path) -> Condition:
    import jinja2
    from jinja2 import meta
    from jinja2.sandbox import SandboxedEnvironment

    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{source}: '{key}' must be a Jinja expression over the row's fields, e.g. 'text|length < 500'")
    environment = SandboxedEnvironment(undefined=jinja2.StrictUndefined)
    try:
        fields = meta.find_undeclared_variables(environment.parse("{{ " + text + " }}"))
        compiled = environment.compile_expression(text, undefined_to_none=False)
    except jinja2.TemplateSyntaxError as error:
        raise ConfigError(f"{source}: '{key}' is not a valid Jinja expression: {error}") from None
    return Condition(text, key, frozenset(fields), lambda row: compiled(**row))


def _parse_metric(data: dict[str, Any], path: Path) -> tuple[str, dict[str, Any]]:
    metric, args = data.get("metric"), data.get("metric_args") or {}
    if "metric_list" in data:  # lm-eval's form: a list of {metric: NAME, **kwargs}; the first one is scored
        if metric is not None:
            raise ConfigError(f"{path}: give 'metric' or 'metric_list', not both")
        entries = data["metric_list"]
        if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict) or "metric" not in entries[0]:
            raise ConfigError(f"{path}: 'metric_list' must be a list of {{metric: NAME, ...}} entries")
        if len(entries) > 1:
            raise ConfigError(f"{path}: 'metric_list': one metric is scored per task; keep one entry")
        args = {k: v for k, v in entries[0].items() if k not in ("metric", "aggregation", "higher_is_better")}
        metric = entries[0]["metric"]
    output_type = data.get("output_type", "generate_until")
    if metric is None:
        metric = "acc" if output_type == "multiple_choice" else "exact_match"
    if not isinstance(metric, str) or not metric:
        raise ConfigError(f"{path}: 'metric' must be a name (exact_match, last_number, ...) or module:function")
    if not isinstance(args, dict):
        raise ConfigError(f"{path}: 'metric_args' must be a mapping of keyword arguments")
    return metric, args


def _parse_generation(value: Any, path: Path) -> tuple[list[str], Optional[int]]:
    value = value or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: 'generation_kwargs' must be a mapping (until, max_gen_toks)")
    for key in value:
        if key not in ("until", "max_gen_toks"):
            raise ConfigError(
                f"{path}: unknown key 'generation_kwargs.{key}'; valid: until, max_gen_toks "
                "(other generation settings go into training_params.generation_kwargs)"
            )
    until = value.get("until", [])
    until = [until] if isinstance(until, str) else until
    if not isinstance(until, list) or not all(isinstance(u, str) and u for u in until):
        raise ConfigError(f"{path}: 'generation_kwargs.until' must be a string or a list of non-empty strings")
    max_gen_toks = value.get("max_gen_toks")
    if max_gen_toks is not None and (isinstance(max_gen_toks, bool) or not isinstance(max_gen_toks, int) or max_gen_toks <= 0):
        raise ConfigError(f"{path}: 'generation_kwargs.max_gen_toks' must be a positive integer")
    return until, max_gen_toks


def _parse_forgetting(value: Any, path: Path) -> str:
    from peftbench.tasks.base import is_local_source

    if value is None:
        return "default"
    if value is False:
        return "none"
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{path}: 'forgetting' must be 'default', 'none', a text file or a hub dataset id")
    if value in FORGETTING_CHOICES:
        return value
    local = _resolve_local(value, path.parent)
    if not Path(value).suffix and not is_local_source(value) and not local.exists():
        return value  # a hub dataset with a `text` column, streamed
    if not local.is_file():
        raise ConfigError(f"{path}: 'forgetting': file not found: {local} (valid: default, none, or a local file)")
    return str(local.resolve())


def _parse_training_params(value: Any, path: Path) -> dict[str, Any]:
    value = value or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: 'training_params' must be a mapping of training parameters")
    for key, instead in DECLARED_ELSEWHERE.items():
        if key in value:
            raise ConfigError(f"{path}: 'training_params.{key}' is declared by the task file's '{instead}' key")
    from peftbench.tasks.text_config import TextTrainConfig

    check_keys(value, f"{path} (training_params)", TextTrainConfig)
    return dict(value)


def parse_harness_tasks(value: Any, where: str) -> list[str]:
    """lm-eval task names from a list or a comma-separated string."""
    if value is None:
        return []
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise ConfigError(f"{where} must be a list of lm-eval task names (or a comma-separated string)")
    return [n.strip() for n in names]


def _parse_harness(data: dict[str, Any], path: Path) -> dict[str, Any]:
    tasks = parse_harness_tasks(data.get("harness_tasks"), f"{path}: 'harness_tasks'")
    if not tasks:
        if "harness_include_path" in data or "harness_limit" in data:
            raise ConfigError(f"{path}: 'harness_include_path' and 'harness_limit' need 'harness_tasks'")
        return {}
    include = data.get("harness_include_path")
    if include is not None:
        folder = _resolve_local(str(include), path.parent)
        if not folder.exists():
            raise ConfigError(f"{path}: 'harness_include_path': not found: {folder} (a folder of lm-eval task YAMLs)")
        include = str(folder.resolve())
    limit = data.get("harness_limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise ConfigError(f"{path}: 'harness_limit' must be a positive integer (items per harness task)")
    return {"tasks": tasks, "include_path": include, "limit": limit}


def content_hash(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def read_task_file(path: str | Path) -> TaskFile:
    """Parse and check a task file; loads no data and no model. Raises ConfigError naming the file and key."""
    path = Path(path).expanduser().resolve()
    data = _load_yaml(path)
    _check_top_level(data, path)
    output_type = data.get("output_type", "generate_until")
    if output_type not in OUTPUT_TYPES:
        raise ConfigError(f"{path}: 'output_type' is {output_type!r}; valid: {', '.join(OUTPUT_TYPES)}")
    if output_type == "multiple_choice" and "doc_to_choice" not in data:
        raise ConfigError(f"{path}: output_type multiple_choice needs 'doc_to_choice' (the field holding the options)")
    if output_type == "generate_until" and "doc_to_choice" in data:
        raise ConfigError(f"{path}: 'doc_to_choice' only applies to output_type: multiple_choice")
    apply_chat = data.get("apply_chat_template", False)
    if not isinstance(apply_chat, bool):
        raise ConfigError(f"{path}: 'apply_chat_template' must be true or false")
    system = data.get("system_instruction")
    if system is not None and (not isinstance(system, str) or not apply_chat):
        raise ConfigError(f"{path}: 'system_instruction' must be a string, and needs apply_chat_template: true")
    delimiter = data.get("target_delimiter", "" if apply_chat else " ")
    if not isinstance(delimiter, str):
        raise ConfigError(f"{path}: 'target_delimiter' must be a string")
    name = data.get("task", path.stem)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{path}: 'task' must be a non-empty name")
    metric, metric_args = _parse_metric(data, path)
    formula = data.get("forgetting_loss", "next_token")
    if formula not in FORGETTING_FORMULAS:
        raise ConfigError(f"{path}: 'forgetting_loss' is {formula!r}; valid: {', '.join(FORGETTING_FORMULAS)}")
    score_name = data.get("score_name")
    if score_name is not None and (not isinstance(score_name, str) or not score_name.replace("_", "").isalnum()):
        raise ConfigError(f"{path}: 'score_name' must be a name of letters, digits and _ (e.g. accuracy)")
    until, max_gen_toks = _parse_generation(data.get("generation_kwargs"), path)
    task = TaskFile(
        path=path, sha256="", name=name, model=_parse_model(data["model"], path), data=_parse_data(data["data"], path),
        doc_to_text=data["doc_to_text"], doc_to_target=data["doc_to_target"], output_type=output_type,
        doc_to_choice=data.get("doc_to_choice"), target_delimiter=delimiter, apply_chat_template=apply_chat,
        system_instruction=system, metric=metric, metric_args=metric_args, until=until, max_gen_toks=max_gen_toks,
        forgetting=_parse_forgetting(data.get("forgetting"), path), forgetting_formula=formula, score_name=score_name,
        training_params=_parse_training_params(data.get("training_params"), path),
        harness=_parse_harness(data, path),
    )
    check_model_folder(task.model, apply_chat, path)
    task.sha256 = content_hash([path, *task.local_files()])
    return task
