"""A task declared in a YAML file (`peftbench run EXP --task my_task.yaml`): any causal LM, the user's data,
templates and scorer. See docs/custom-task.md for the format and tasks/task_file.py for its parsing.

It runs on the text-task engine (peftbench.tasks.text) with the file's rows: each row becomes {query: the
rendered prompt, response: target delimiter + the rendered target}, so tokenization, batching, the loss and
the forgetting measure are TextTask's. The tasks shipped in tasks/files/ (`math`) are such files too.
Evaluation is the task file's: generation scored by a built-in or user scorer, or multiple choice by the
log-likelihood of each option.

Everything that can be checked without a model is checked in `check_inputs`: the file's keys, the data
(every split has rows, every template field exists in it, every multiple-choice target is an option), the
scorer imports, the model folder has a tokenizer (and a chat template when the file asks for one).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np

from peftbench.config import ConfigError
from peftbench.tasks.base import (
    EvalResult,
    Rows,
    TaskData,
    check_local_source,
    is_local_source,
    load_first_rows_streaming,
    load_rows,
    not_utf8_where,
    require_columns,
)
from peftbench.tasks.text import TextTask, subset_in_file_order
from peftbench.tasks.task_file import (
    DECLARED_ELSEWHERE,
    FORGETTING_CHOICES,
    SPLITS,
    TaskFile,
    builtin_model_path,
    parse_template,
    read_task_file,
    shipped_task_file,
)

MATH_FORGETTING_DATA = "HuggingFaceFW/finewiki"  # `forgetting: default` for a model other than the shipped one
# training parameter -> the split whose source it replaces (--set train_data=FILE)
DATA_PARAMS = {"train_data": "train", "valid_data": "valid", "test_data": "test"}
HUB_SPLIT_NAMES = {"train": "train", "valid": "validation", "test": "test", "file": "train"}


class DeclaredTask(TextTask):
    score_name = "score"
    higher_is_better = True

    def __init__(self, path: str | Path, registered_name: Optional[str] = None, description: Optional[str] = None) -> None:
        """`registered_name`: the name of a task file shipped in the package (`math`), which results carry
        instead of the file's name and hash (the package's git commit identifies its content)."""
        self.spec: TaskFile = read_task_file(path)
        self.name = registered_name or self.spec.identity
        self.description = description or f"{self.spec.name} (task file {self.spec.path})"
        if self.spec.score_name:
            self.score_name = self.spec.score_name
        elif self.spec.output_type == "multiple_choice":
            self.score_name = "accuracy"
        else:  # a user's module:function is not a name to put in a metrics key
            self.score_name = self.spec.metric if ":" not in self.spec.metric else "score"
        self.forgetting_formula = self.spec.forgetting_formula
        self.harness = self.spec.harness
        self.scorer = None  # generate_until: set by check_inputs (evaluation/scorers.py)
        self._data: Optional[tuple[Any, TaskData]] = None  # (the config it was read for, the data)
        self._tokenizer = None  # for the chat template: set by load_processor
        self._sources_in_use: Optional[dict[str, str]] = None  # the data sources read, for error messages

    def provenance(self) -> dict[str, Any]:
        return {"task_file": {"name": self.spec.path.name, "path": str(self.spec.path), "sha256": self.spec.sha256,
                              "task": self.spec.name}}

    # ---- configuration ----
    def default_params(self) -> dict[str, Any]:
        from peftbench.tasks import get_task
        from peftbench.tasks.math_tiny import MathTinyTask

        builtin = Path(self.spec.model) == builtin_model_path("tiny-math-llama")
        # the shipped tiny model gets math-tiny's CPU-sized recipe; any other model the published one (the
        # shipped math task file's training_params), which that file itself states in full
        if builtin:
            base = MathTinyTask().default_params()
        else:
            base = {} if self.spec.path == shipped_task_file("math") else get_task("math").default_params()
        generation = {"max_length": None, "max_new_tokens": self.spec.max_gen_toks or 256}
        forgetting = self.spec.forgetting
        defaults = {
            **base, "model_id": self.spec.model, "query_template": "{query}", "generation_kwargs": generation,
            "train_size": None, "test_size": None,
            # a user's task trains on the completion, in shuffled batches (math's file sets the PEFT suite's)
            "loss_on": "completion", "batch_order": "shuffled",
            **{key: self.spec.data.sources.get(split) for key, split in DATA_PARAMS.items()},
            "forgetting_data": None if forgetting in FORGETTING_CHOICES else forgetting,
        }
        defaults.update(self.spec.training_params)
        return defaults

    def check_inputs(self, config) -> None:
        from peftbench.evaluation.scorers import load_scorer

        source = str(self.spec.path)
        for key, split in DATA_PARAMS.items():  # --set train_data=FILE replaces the source of data.train
            value = getattr(config, key)
            if value is not None:
                if split not in self.spec.data.sources:
                    raise ConfigError(
                        f"training parameter '{key}' replaces '{DECLARED_ELSEWHERE[key]}', which {source} does not "
                        "give as a source (it is carved by data.split, or absent)"
                    )
                if value != self.spec.data.sources[split] or not is_local_source(value):
                    # a replacement, or a hub id (checked for reachability); the file's own local files are
                    # checked by read_task_file, and an empty one is reported by split below
                    check_local_source(value, key)
        if config.forgetting_data is not None:
            if self.spec.forgetting == "none":
                raise ConfigError(f"training parameter 'forgetting_data' is set but {source} has 'forgetting: none'")
            if config.forgetting_data != self.spec.forgetting or not is_local_source(config.forgetting_data):
                check_local_source(config.forgetting_data, "forgetting_data")
        if self.spec.output_type == "generate_until":
            self.scorer = load_scorer(self.spec.metric, self.spec.metric_args, self.spec.path.parent, source)
        elif self.spec.metric not in ("acc", "acc_norm"):
            raise ConfigError(f"{source}: 'metric' {self.spec.metric!r} for multiple_choice; valid: acc, acc_norm")
        if all(is_local_source(data_source) for data_source in self._sources(config).values()):
            # every problem of local data before any model loads; hub data is read (downloaded) by load_data
            self._data = (config, self._read_data(config))

    # ---- data ----
    def load_data(self, config) -> TaskData:
        """The data check_inputs read for this config (the engine calls both with one config), else read now."""
        if self._data is None or self._data[0] is not config:
            self._data = None
            self.check_inputs(config)
        return self._data[1] if self._data is not None else self._read_data(config)

    def _read_data(self, config) -> TaskData:
        sources = self._sources_in_use = self._sources(config)
        raw = {key: self._load_source(key, source) for key, source in sources.items()}
        splits = self._carve(raw)
        for split in SPLITS:  # valid may be left out of the file, but a declared split must have rows
            declared = split != "valid" or split in self.spec.data.sources or split in self.spec.data.carve
            if declared and not splits.get(split):
                raise ConfigError(f"{self.spec.path}: 'data.{split}' has no rows ({self._where(split)})")
        rows = {split: self._to_rows(split, splits.get(split, [])) for split in SPLITS}
        train = rows["train"]
        train = subset_in_file_order(train, config.train_size, self.spec.data.seed)
        test = rows["test"][: config.test_size] if config.test_size is not None else rows["test"]
        return TaskData(
            train=train, valid=rows["valid"][: config.valid_size], test=test,
            forgetting=self.forgetting_rows(config),
            info={"task_file": str(self.spec.path), "task_sha256": self.spec.sha256,
                  **{f"data.{key}": source for key, source in sources.items()},
                  "data.split": self.spec.data.carve, "data.seed": self.spec.data.seed,
                  "forgetting": config.forgetting_data or self.spec.forgetting},
        )

    def _sources(self, config) -> dict[str, str]:
        """The file's sources, with those that training parameters replace (train_data, ...)."""
        sources = dict(self.spec.data.sources)
        for key, split in DATA_PARAMS.items():
            if getattr(config, key, None) is not None:
                sources[split] = getattr(config, key)
        return sources

    def _where(self, split: str) -> str:
        sources = self._sources_in_use or self.spec.data.sources
        if split in sources:
            return sources[split]
        origin = sources.get("file", sources.get("train"))
        return f"carved from {origin} by data.split" if split in self.spec.data.carve else f"from {origin}"

    def _load_source(self, key: str, source: str) -> list[dict[str, Any]]:
        path = Path(source)
        if path.is_file() and path.stat().st_size < 4096 and not path.read_bytes().strip():
            return []  # an empty file: `datasets` cannot read it, and the caller says which split is empty
        options = self.spec.data.options.get(key, {})
        hub_config = None if is_local_source(source) else options.get("name")
        try:
            rows = load_rows(source, split=options.get("split", HUB_SPLIT_NAMES[key]), hub_config=hub_config,
                             key=f"data.{key}")
        except ConfigError as error:
            raise ConfigError(f"{self.spec.path}: {error}") from None
        except Exception as error:  # a malformed file: name it
            raise ConfigError(f"{self.spec.path}: 'data.{key}' ({source}) cannot be read: {error}") from None
        return self._apply_options(key, source, rows, options)

    def _apply_options(self, key: str, source: str, docs: list[dict[str, Any]], options: dict[str, Any]):
        """rename, then keep_if, then shuffle_seed (see task_file.DataSpec.options)."""
        rename = options.get("rename", {})
        if rename:
            docs = [{rename.get(column, column): value for column, value in doc.items()} for doc in docs]
        condition = options.get("keep_if")
        if condition is not None and docs:
            missing = sorted(condition.fields - set(docs[0]))
            if missing:
                raise ConfigError(f"{self.spec.path}: '{condition.key}' uses field(s) {', '.join(missing)} that "
                                  f"data.{key} ({source}) lacks; its fields: {', '.join(sorted(docs[0]))}")
            docs = [doc for doc in docs if condition.evaluate(doc)]
        if options.get("shuffle_seed") is not None:
            # numpy's legacy global-generator shuffle (np.random.seed(N); np.random.shuffle), in its own generator
            order = np.arange(len(docs))
            np.random.RandomState(options["shuffle_seed"]).shuffle(order)
            docs = [docs[int(i)] for i in order]
        return docs

    def _carve(self, raw: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
        """Cut valid/test out of `file` (or train) by data.split, with data.seed; the rest is train."""
        splits = {key: rows for key, rows in raw.items() if key in SPLITS}
        carve = self.spec.data.carve
        if not carve:
            return splits
        origin_key = "file" if "file" in raw else "train"
        pool = raw[origin_key]
        order = [int(i) for i in np.random.default_rng(self.spec.data.seed).permutation(len(pool))]
        start = 0
        for split in ("test", "valid"):
            if split in carve:
                amount = carve[split]
                count = int(round(amount * len(pool))) if isinstance(amount, float) else int(amount)
                splits[split] = [pool[i] for i in order[start : start + count]]
                start += count
        splits["train"] = [pool[i] for i in order[start:]]
        return splits

    def _to_rows(self, split: str, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Render the templates on every row; a missing field or a bad option is an error naming the split."""
        if not docs:
            return []
        source, where = self.spec.path, f"data.{split} ({self._where(split)})"
        columns = set().union(*(doc.keys() for doc in docs))
        text = parse_template(self.spec.doc_to_text, "doc_to_text", source, columns)
        target = parse_template(self.spec.doc_to_target, "doc_to_target", source, columns)
        for template in (text, target):
            missing = sorted(template.fields - columns)
            if missing:
                raise ConfigError(
                    f"{source}: '{template.key}' uses field(s) {', '.join(missing)} that {where} lacks; "
                    f"its fields: {', '.join(sorted(columns))}"
                )
        rows = []
        for index, doc in enumerate(docs):
            try:
                prompt, rendered_target = text.render(doc), target.render(doc)
            except Exception as error:  # e.g. a field missing from this one row, or null in it
                raise ConfigError(f"{source}: cannot render row {index} of {where}: {type(error).__name__}: {error}; "
                                  f"the row: {_short_row(doc)}") from None
            row = {"query": prompt, "target": rendered_target, "doc": doc}
            if self.spec.output_type == "multiple_choice":
                row["choices"], row["gold"] = self._choices(doc, rendered_target, columns, index, where)
                rendered_target = row["choices"][row["gold"]]
                row["target"] = rendered_target
            row["response"] = self.spec.target_delimiter + rendered_target
            rows.append(row)
        return rows

    def _choices(self, doc, target: str, columns: set[str], index: int, where: str) -> tuple[list[str], int]:
        source, choice = self.spec.path, self.spec.doc_to_choice
        if isinstance(choice, list):
            options = choice
        elif isinstance(choice, str) and choice in columns:
            options = doc[choice]
        else:
            raise ConfigError(
                f"{source}: 'doc_to_choice' must name the field holding the options (one of {', '.join(sorted(columns))}) "
                "or list the options"
            )
        if not isinstance(options, list) or len(options) < 2 or not all(isinstance(o, (str, int, float)) for o in options):
            raise ConfigError(f"{source}: 'doc_to_choice': row {index} of {where} has {options!r}, not a list of 2+ options")
        options = [str(o) for o in options]
        stripped = target.strip()
        if stripped in options:
            return options, options.index(stripped)
        if stripped.lstrip("-").isdigit() and 0 <= int(stripped) < len(options):
            return options, int(stripped)
        raise ConfigError(
            f"{source}: 'doc_to_target' of row {index} of {where} is {target!r}: neither one of its options "
            f"{options} nor an index 0..{len(options) - 1}"
        )

    def split_rows(self, split: str, source: str) -> list[dict[str, Any]]:
        """The rows of `source` read as this file reads data.<split> (its options and templates), e.g. a local
        file in the math schema for math-tiny's --set train_data=FILE."""
        self._sources_in_use = {**self.spec.data.sources, split: source}
        docs = self._load_source(split, source)
        if not docs:
            raise ConfigError(f"{self.spec.path}: data.{split} ({source}) has no rows")
        return self._to_rows(split, docs)

    def forgetting_rows(self, config) -> Rows:
        from peftbench.tasks import math_tiny, math_tiny_data

        choice = config.forgetting_data or self.spec.forgetting
        if choice == "none" or config.forgetting_size == 0:
            return []
        if choice == "default":
            if Path(self.spec.model) == builtin_model_path("tiny-math-llama"):
                # the shipped model's own pretraining distribution, as math-tiny
                texts = math_tiny_data.forgetting_texts(config.forgetting_size, seed=math_tiny.DATA_SEED)
                return [{"text": t} for t in texts]
            rows = self._first_forgetting_rows(MATH_FORGETTING_DATA, config)
            require_columns(rows, ["text"], MATH_FORGETTING_DATA, "forgetting")
            return rows
        path = Path(choice)
        if path.suffix.lower() == ".txt":
            try:
                texts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            except UnicodeDecodeError as error:
                raise ConfigError(f"{self.spec.path}: 'forgetting' ({choice}): {not_utf8_where(path, error)}") from None
            rows = [{"text": t} for t in texts[: config.forgetting_size]]
        else:  # a data file or a hub dataset (streamed: no whole shard is downloaded for 100 rows)
            rows = [dict(r) for r in self._first_forgetting_rows(choice, config)]
            if rows and "text" not in rows[0]:
                raise ConfigError(f"{self.spec.path}: 'forgetting' ({choice}) needs a 'text' field (or give a .txt file)")
        if not rows:
            raise ConfigError(f"{self.spec.path}: 'forgetting' ({choice}) has no text; give text or 'none'")
        return rows

    def _first_forgetting_rows(self, source: str, config) -> Rows:
        """The first forgetting_size rows of `source` (a hub dataset streamed); an error names the task file."""
        try:
            return load_first_rows_streaming(source, config.forgetting_size, key="forgetting")
        except ConfigError as error:  # e.g. the hub offline: in seconds, not after half a minute of retries
            raise ConfigError(f"{self.spec.path}: {error}") from None

    # ---- model ----
    def load_processor(self, config):
        tokenizer = super().load_processor(config)
        if self.spec.apply_chat_template and not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                f"{self.spec.path}: 'apply_chat_template' is true but the tokenizer of {config.model_id} has no chat template"
            )
        self._tokenizer = tokenizer
        return tokenizer

    def prompt(self, query: str, config) -> str:
        query = super().prompt(query, config)  # query_template ("{query}" unless an experiment sets it)
        if not self.spec.apply_chat_template:
            return query
        messages = [{"role": "user", "content": query}]
        if self.spec.system_instruction:
            messages.insert(0, {"role": "system", "content": self.spec.system_instruction})
        rendered = self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return strip_template_bos(rendered, self._tokenizer)

    # ---- evaluation ----
    def evaluate(self, model, processor, rows: Rows, config, desc: str) -> EvalResult:
        prompts = [self.prompt(row["query"], config) for row in rows]
        at_length_limit = None
        if self.spec.output_type == "multiple_choice":
            predictions, scores = self._choose(model, processor, prompts, rows, config)
        else:
            from peftbench.evaluation.generation import generate_completions

            completions = generate_completions(
                model, processor, prompts, batch_size=config.batch_size_eval, generation_kwargs=config.generation_kwargs,
                max_prompt_length=config.max_seq_length, decoding=config.decoding, desc=desc,
            )
            at_length_limit = completions.at_length_limit
            predictions = [self._cut_at_stop(c) for c in completions.texts]
            scores = self._score(predictions, rows, config)
        per_item = [int(s) if float(s).is_integer() else s for s in scores]
        return EvalResult(
            score=sum(scores) / len(scores) if scores else float("nan"), per_item_correct=per_item,
            predictions=predictions, targets=[row["target"] for row in rows], inputs=prompts,
            completions_at_length_limit=at_length_limit,
        )

    def _score(self, predictions: list[str], rows: Rows, config) -> list[float]:
        from peftbench.evaluation.scorers import ScorerTimeout, score_all

        try:
            return score_all(self.scorer, predictions, [row["target"] for row in rows], [row["doc"] for row in rows],
                             timeout_s=config.scorer_timeout_s)
        except ScorerTimeout as error:
            raise ConfigError(f"{self.spec.path}: 'metric' {self.spec.metric}: {error}; fix the scorer, or raise the "
                              "training parameter scorer_timeout_s if it is slow by design") from None

    def _cut_at_stop(self, completion: str) -> str:
        for stop in self.spec.until:
            completion = completion.split(stop, 1)[0]
        return completion

    def _choose(self, model, tokenizer, prompts, rows, config) -> tuple[list[str], list[float]]:
        """The option with the highest log-likelihood (acc) or per character (acc_norm, as lm-eval)."""
        from peftbench.evaluation.loglikelihood import continuation_logprobs

        pairs = [(p, self.spec.target_delimiter + o) for p, row in zip(prompts, rows) for o in row["choices"]]
        logprobs = continuation_logprobs(
            model, tokenizer, pairs, batch_size=config.batch_size_eval, max_length=config.max_seq_length
        )
        predictions, scores, position = [], [], 0
        for row in rows:
            options = row["choices"]
            values = logprobs[position : position + len(options)]
            position += len(options)
            if self.spec.metric == "acc_norm":
                values = [v / max(len(o.encode("utf-8")), 1) for v, o in zip(values, options)]
            best = int(np.argmax(values))
            predictions.append(options[best])
            scores.append(float(best == row["gold"]))
        return predictions, scores


def strip_template_bos(text: str, tokenizer) -> str:
    """`text` without the BOS token that a chat template wrote at its start, when the tokenizer adds BOS itself
    on encoding: every prompt is tokenized with the special tokens (generation, training, log-likelihoods), so
    the template's BOS would become a second one."""
    bos = tokenizer.bos_token
    if not bos or not text.startswith(bos):
        return text
    adds_bos = tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]
    return text[len(bos):] if adds_bos else text


def _short_row(doc: dict[str, Any], most: int = 160) -> str:
    """A row as JSON, cut to `most` characters, so that a message shows which row it means."""
    text = json.dumps(doc, ensure_ascii=False, default=str)
    return text if len(text) <= most else text[: most - 3] + "..."
