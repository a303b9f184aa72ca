"""Bring your own task: a task declared in one YAML file (tests/fixtures/custom_task: fruit colours, a dataset
peftbench has never seen, with its own field names and a scorer in a local .py file).

Runs train LoRA and IA3 for a few steps on the shipped tiny model, in this process, then `report`; the
multiple-choice variant runs through the CLI. Every bad input listed in docs/custom-task.md is an error
naming the file and the key, before any model loads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from peftbench.cli import app
from peftbench.config import ConfigError
from peftbench.run.engine import execute
from peftbench.run.plan import plan_run
from peftbench.run.request import RunRequest
from peftbench.tasks import get_task

FIXTURES = Path(__file__).parent / "fixtures"
QUICK = Path(__file__).resolve().parents[1] / "src" / "peftbench" / "suites" / "quick"


@pytest.fixture()
def task_dir(tmp_path) -> Path:
    """A writable copy of the fruit-colour task folder (task files, data, scorer)."""
    destination = tmp_path / "custom_task"
    shutil.copytree(FIXTURES / "custom_task", destination)
    return destination


def edit_task(task_dir: Path, name: str = "fruit_colour.yaml", **changes) -> Path:
    """A variant of a task file with some keys replaced (None deletes a key)."""
    data = yaml.safe_load((task_dir / name).read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path = task_dir / f"variant-{len(list(task_dir.glob('variant-*')))}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def prepare_error(task_file: Path, tmp_path: Path) -> str:
    request = RunRequest(task=str(task_file), results_dir=str(tmp_path / "results"),
                         experiment_dir=str(QUICK / "lora" / "rank16"))
    with pytest.raises(ConfigError) as error:
        plan_run(request)
    return str(error.value)


def run_in_process(task_file: Path, experiment: Path, results: Path) -> dict:
    request = RunRequest(task=str(task_file), results_dir=str(results), experiment_dir=str(experiment),
                         save_checkpoint=False, show_progress=False)
    path, status = execute(request)
    assert status == "success", json.loads(path.read_text())["peftbench"]["error_msg"]
    return json.loads(path.read_text())


def test_lora_and_ia3_on_a_task_file_then_report(task_dir, tmp_path):
    results = tmp_path / "results"
    task_file = task_dir / "fruit_colour.yaml"
    lora = run_in_process(task_file, QUICK / "lora" / "rank16", results)
    ia3 = run_in_process(task_file, QUICK / "ia3" / "default", results)

    digest = get_task(str(task_file)).provenance()["task_file"]["sha256"]
    for result in (lora, ia3):
        own = result["peftbench"]
        assert own["task"] == f"fruit_colour.yaml@{digest[:12]}"
        assert own["task_file"]["name"] == "fruit_colour.yaml" and own["task_file"]["sha256"] == digest
        assert own["score_name"] == "score"  # a user's module:function
        # the test split's 8 rows, each with what the model was asked, wrote and should have written
        assert len(own["predictions"]) == len(own["per_item_correct"]) == 8
        first = own["predictions"][0]
        assert first["input"].startswith("Question: What colour is a ") and first["input"].endswith("?\nAnswer:")
        assert first["target"] in ("yellow", "red", "green", "blue", "purple", "orange")
        assert "\n" not in first["prediction"]  # cut at generation_kwargs.until
        assert own["forgetting"] is not None  # default: the shipped model's own pretraining text
        assert result["run_info"]["train_config"]["max_steps"] == 4  # the task file's training_params
    assert lora["peftbench"]["trainable_params"] != ia3["peftbench"]["trainable_params"]

    report = CliRunner().invoke(app, ["report", str(results), "--json"])
    assert report.exit_code == 0, report.output
    points = json.loads(report.output)["points"]
    assert {p["task"] for p in points} == {f"fruit_colour.yaml@{digest[:12]}"}
    assert {p["method"] for p in points} == {"lora", "ia3"}


def test_custom_scorer_decides_the_score(task_dir):
    task = get_task(str(task_dir / "fruit_colour.yaml"))
    config = _config(task)
    task.check_inputs(config)
    row = task.load_data(config).test[0]
    colour = row["doc"]["colour"]
    assert task.scorer(f" {colour.upper()}, of course", row["target"], row["doc"]) == 1.0
    assert task.scorer(f" not {colour}", row["target"], row["doc"]) == 0.0


def test_results_of_two_task_files_are_never_one_task(task_dir, tmp_path):
    one = get_task(str(task_dir / "fruit_colour.yaml"))
    (task_dir / "fruit_colour.yaml").write_text((task_dir / "fruit_colour.yaml").read_text() + "\n# edited\n")
    edited = get_task(str(task_dir / "fruit_colour.yaml"))
    assert one.name.split("@")[0] == edited.name.split("@")[0] == "fruit_colour.yaml"
    assert one.name != edited.name  # same file name, other content
    before = get_task(str(task_dir / "fruit_colour.yaml")).name
    (task_dir / "colour_scorer.py").write_text((task_dir / "colour_scorer.py").read_text() + "\n")
    assert get_task(str(task_dir / "fruit_colour.yaml")).name != before  # the scorer is part of the task


def test_multiple_choice_variant_through_the_cli(task_dir, tmp_path):
    results = tmp_path / "results"
    outcome = CliRunner().invoke(app, [
        "run", str(QUICK / "lora" / "rank16"), "--task", str(task_dir / "fruit_colour_mc.yaml"),
        "--results", str(results), "--no-save",
    ])
    assert outcome.exit_code == 0, outcome.output
    own = json.loads((results / "lora--rank16.json").read_text())["peftbench"]
    assert own["task"].startswith("fruit_colour_mc.yaml@") and own["score_name"] == "accuracy"
    # data.split carves 15% of 48 rows for test with data.seed; the prediction is always one of the options
    assert len(own["predictions"]) == 7
    for item in own["predictions"]:
        assert item["score"] == int(item["prediction"] == item["target"])
    assert own["test_score"] == pytest.approx(sum(i["score"] for i in own["predictions"]) / 7)
    assert own["forgetting"] is None  # forgetting: none


def test_multiple_choice_picks_the_most_likely_option(task_dir):
    """The log-likelihood of each option decides: an option the model finds far likelier wins."""
    import torch

    from peftbench.evaluation.loglikelihood import continuation_logprobs

    task = get_task(str(task_dir / "fruit_colour_mc.yaml"))
    config = _config(task)
    tokenizer = task.load_processor(config)
    model = task.load_model(config, "cpu")
    pairs = [("Question: 12 + 30 = ", "42"), ("Question: 12 + 30 = ", "purple elephant")]
    together = continuation_logprobs(model, tokenizer, pairs, batch_size=2, max_length=64)
    alone = [continuation_logprobs(model, tokenizer, [p], batch_size=1, max_length=64)[0] for p in pairs]
    assert together == pytest.approx(alone, abs=1e-4)  # padding in a batch changes nothing
    # by hand: the sum of log-probabilities of the continuation's tokens
    ids = tokenizer("Question: 12 + 30 = 42")["input_ids"]
    n_context = len(tokenizer("Question: 12 + 30 = ")["input_ids"])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
    expected = sum(float(logprobs[t - 1, ids[t]]) for t in range(n_context, len(ids)))
    assert alone[0] == pytest.approx(expected, abs=1e-4)


def _config(task):
    return task.build_config()


# ---- bad input: an error naming the file and the key, before anything loads ----
def test_template_field_the_data_lacks(task_dir, tmp_path):
    message = prepare_error(edit_task(task_dir, doc_to_text="What colour is {fruit}?"), tmp_path)
    assert "variant-0.yaml" in message and "'doc_to_text'" in message and "fruit" in message
    assert "item" in message  # the fields the data has


def test_empty_split(task_dir, tmp_path):
    (task_dir / "valid.jsonl").write_text("\n")
    message = prepare_error(task_dir / "fruit_colour.yaml", tmp_path)
    assert "fruit_colour.yaml" in message and "'data.valid'" in message and "no rows" in message


def test_unknown_metric(task_dir, tmp_path):
    message = prepare_error(edit_task(task_dir, metric="f1_scorez"), tmp_path)
    assert "'metric'" in message and "f1_scorez" in message and "exact_match" in message


def test_scorer_that_does_not_import(task_dir, tmp_path):
    (task_dir / "colour_scorer.py").write_text("import no_such_module_here\n")
    message = prepare_error(task_dir / "fruit_colour.yaml", tmp_path)
    assert "'metric'" in message and "colour_scorer.py" in message and "no_such_module_here" in message


def test_scorer_function_missing(task_dir, tmp_path):
    message = prepare_error(edit_task(task_dir, metric="colour_scorer:nope"), tmp_path)
    assert "'metric'" in message and "nope" in message


def test_model_folder_without_tokenizer(task_dir, tmp_path):
    from peftbench.tasks.task_file import builtin_model_path

    model = tmp_path / "model-without-tokenizer"
    model.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(builtin_model_path("tiny-math-llama") / name, model / name)
    message = prepare_error(edit_task(task_dir, model=str(model)), tmp_path)
    assert "'model'" in message and "no tokenizer" in message and str(model) in message


def test_chat_template_from_a_tokenizer_without_one(task_dir, tmp_path):
    message = prepare_error(edit_task(task_dir, apply_chat_template=True), tmp_path)
    assert "'apply_chat_template'" in message and "no chat template" in message


CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def chat_model(folder, chat_template: str):
    """A copy of the shipped tiny model whose tokenizer has `chat_template`."""
    from peftbench.tasks.task_file import builtin_model_path

    shutil.copytree(builtin_model_path("tiny-math-llama"), folder)
    config_file = folder / "tokenizer_config.json"
    tokenizer_config = json.loads(config_file.read_text())
    tokenizer_config["chat_template"] = chat_template
    config_file.write_text(json.dumps(tokenizer_config))
    return folder


def test_chat_template_renders_the_prompt(task_dir, tmp_path):
    model = chat_model(tmp_path / "chat-model", CHAT_TEMPLATE)
    task = get_task(str(edit_task(task_dir, model=str(model), apply_chat_template=True, system_instruction="Be brief.",
                               forgetting="none")))
    config = _config(task)
    task.check_inputs(config)
    task.load_processor(config)
    row = task.load_data(config).test[0]
    assert task.prompt(row["query"], config) == (
        f"<|system|>Be brief.\n<|user|>{row['query']}\n<|assistant|>"
    )
    assert row["response"] == row["target"]  # no delimiter after the assistant header


@pytest.mark.parametrize("changes, key", [
    ({"doc_to_txt": "x"}, "doc_to_txt"),  # a typo: unknown key, with the close match
    ({"output_type": "loglikelihood"}, "output_type"),
    ({"dataset_path": "x"}, "dataset_path"),  # lm-eval's key, with what to write instead
    ({"training_params": {"max_stepz": 3}}, "max_stepz"),
    ({"training_params": {"train_data": "x.jsonl"}}, "training_params.train_data"),
    ({"data": {"train": "missing.jsonl", "test": "test.jsonl"}}, "data.train"),
    ({"data": {"file": "all.jsonl", "split": {"test": 1.5}}}, "data.split.test"),
    ({"metric_args": {"ignore_case": True}}, "metric_args"),  # arguments for a user's scorer
])
def test_other_bad_keys_are_named(task_dir, tmp_path, changes, key):
    message = prepare_error(edit_task(task_dir, **changes), tmp_path)
    assert key in message and "variant-0.yaml" in message


def test_multiple_choice_target_must_be_an_option(task_dir, tmp_path):
    message = prepare_error(edit_task(task_dir, "fruit_colour_mc.yaml", doc_to_target="{item}"), tmp_path)
    assert "'doc_to_target'" in message and "options" in message


def test_bad_task_file_fails_the_cli_before_any_run(task_dir, tmp_path):
    outcome = CliRunner().invoke(app, [
        "run", str(QUICK / "lora" / "rank16"), "--task", str(edit_task(task_dir, metric="nope")),
        "--results", str(tmp_path / "results"),
    ])
    assert outcome.exit_code == 2 and "nope" in outcome.output
    assert not (tmp_path / "results").exists()


# ---- init-task ----
def test_init_task_writes_a_task_file_that_runs(task_dir, tmp_path):
    data = task_dir / "qa.jsonl"
    rows = [json.loads(line) for line in (task_dir / "all.jsonl").read_text().splitlines()]
    data.write_text("".join(json.dumps({"customer_question": f"What colour is {r['item']}?", "reply": r["colour"]}) + "\n"
                            for r in rows))
    task_file = tmp_path / "tasks" / "qa.yaml"
    outcome = CliRunner().invoke(app, ["init-task", str(task_file), "--data", str(data)])
    assert outcome.exit_code == 0, outcome.output
    text = task_file.read_text()
    spec = yaml.safe_load(text)
    assert spec["doc_to_text"] == "{customer_question}\nAnswer:" and spec["doc_to_target"] == "reply"
    assert spec["output_type"] == "generate_until" and spec["data"]["file"] == "../custom_task/qa.jsonl"
    assert "# The data's columns: customer_question, reply" in text
    task = get_task(str(task_file))
    config = _config(task)
    task.check_inputs(config)
    data_rows = task.load_data(config)
    assert len(data_rows.test) == round(0.2 * 48) and len(data_rows.valid) == round(0.1 * 48)
    assert data_rows.test[0]["response"] == " " + data_rows.test[0]["doc"]["reply"]

    again = CliRunner().invoke(app, ["init-task", str(task_file), "--data", str(data)])
    assert again.exit_code == 2 and "--force" in again.output


def test_init_task_makes_a_list_column_multiple_choice(task_dir, tmp_path):
    task_file = tmp_path / "mc.yaml"
    outcome = CliRunner().invoke(app, ["init-task", str(task_file), "--data", str(task_dir / "all.jsonl")])
    assert outcome.exit_code == 0, outcome.output
    spec = yaml.safe_load(task_file.read_text())
    assert spec["output_type"] == "multiple_choice" and spec["doc_to_choice"] == "options"
    assert spec["doc_to_target"] == "label"


def test_suite_runs_on_a_task_file_and_reruns_after_an_edit(task_dir, tmp_path):
    results = tmp_path / "suite"
    task_file = task_dir / "fruit_colour_mc.yaml"
    args = ["suite", "quick", "--task", str(task_file), "--only", "lora/rank16", "--results", str(results),
            "--workers", "1"]
    outcome = CliRunner().invoke(app, args)
    assert outcome.exit_code == 0, outcome.output
    first = json.loads((results / "lora--rank16.json").read_text())
    assert first["peftbench"]["task"] == get_task(str(task_file)).name

    # the same task file: the finished result is kept; an edited one is another task, so it runs again
    assert CliRunner().invoke(app, args).exit_code == 0
    assert json.loads((results / "lora--rank16.json").read_text())["run_info"]["created_at"] == first["run_info"]["created_at"]
    task_file.write_text(task_file.read_text().replace("max_steps: 4", "max_steps: 3"))
    assert CliRunner().invoke(app, args).exit_code == 0
    second = json.loads((results / "lora--rank16.json").read_text())["peftbench"]
    assert second["task"] == get_task(str(task_file)).name != first["peftbench"]["task"] and second["steps"] == 3


def test_loss_is_on_the_completion_only_by_default(task_dir, tiny_model_dir):
    """Any model (here the tests' tiny Llama, not the shipped one): prompt tokens are masked out of the loss,
    the target and its EOS are learned."""
    task = get_task(str(edit_task(task_dir, model=str(tiny_model_dir), forgetting="none")))
    config = _config(task)
    task.check_inputs(config)
    tokenizer = task.load_processor(config)
    rows = task.load_data(config).train
    batch = next(task.train_batches(rows, tokenizer, config, seed=0))
    labels, ids = batch.inputs["labels"], batch.inputs["input_ids"]
    for row_labels, row_ids in zip(labels.tolist(), ids.tolist()):
        learned = [token for token, label in zip(row_ids, row_labels) if label != -100]
        text = tokenizer.decode(learned, skip_special_tokens=True)
        assert learned[-1] == tokenizer.eos_token_id
        assert "What colour" not in text and text.strip() in {r["target"] for r in rows}


def test_lm_eval_style_jinja_templates_and_valid_carved_from_train(task_dir):
    task = get_task(str(edit_task(
        task_dir, doc_to_text="Question: What colour is {{item}}?\nAnswer:", doc_to_target="{{colour | upper}}",
        data={"train": "train.jsonl", "test": "test.jsonl", "split": {"valid": 5}, "seed": 1},
    )))
    config = _config(task)
    task.check_inputs(config)
    data = task.load_data(config)
    assert len(data.valid) == 5 and len(data.train) == 32 - 5 and len(data.test) == 8
    row = data.test[0]
    assert row["query"] == f"Question: What colour is {row['doc']['item']}?\nAnswer:"
    assert row["target"] == row["doc"]["colour"].upper() and row["response"] == " " + row["target"]
    # the valid rows are train rows (carved with data.seed), disjoint from what is left to train on
    train_items = {r["doc"]["item"] for r in data.train}
    assert not {r["doc"]["item"] for r in data.valid} & train_items


def test_a_chat_template_that_writes_bos_gives_one_bos(task_dir, tmp_path):
    """Llama-3-style templates start with {{ bos_token }}; the tokenizer adds BOS too when it encodes the prompt."""
    model = chat_model(tmp_path / "chat-bos-model", "{{ bos_token }}" + CHAT_TEMPLATE)
    task = get_task(str(edit_task(task_dir, model=str(model), apply_chat_template=True, forgetting="none")))
    config = _config(task)
    task.check_inputs(config)
    tokenizer = task.load_processor(config)
    data = task.load_data(config)
    assert tokenizer("x")["input_ids"][0] == tokenizer.bos_token_id  # the tokenizer adds BOS on its own
    row = data.test[0]
    prompt = task.prompt(row["query"], config)
    assert prompt.startswith("<|user|>")
    assert tokenizer(prompt)["input_ids"].count(tokenizer.bos_token_id) == 1
    (ids, _), = task.tokenize_examples(data.train[:1], tokenizer, config)  # the training text too
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id


def test_source_options_rename_keep_if_and_shuffle_seed(task_dir):
    """What the math task file needs, for any task: per-split renames, a row filter and the suite's sample."""
    import numpy as np

    def read(name: str) -> list[dict]:
        return [json.loads(line) for line in (task_dir / name).read_text().splitlines() if line.strip()]

    renamed = {"item": "thing"}
    task = get_task(str(edit_task(task_dir, forgetting="none", doc_to_text="What colour is {thing}?", data={
        "train": {"path": "train.jsonl", "rename": renamed, "keep_if": "colour != 'green'"},
        "valid": {"path": "valid.jsonl", "rename": renamed, "shuffle_seed": 0},
        "test": {"path": "test.jsonl", "rename": renamed},
    })))
    config = task.build_config()
    data = task.load_data(config)
    expected_train = [row for row in read("train.jsonl") if row["colour"] != "green"]
    assert 0 < len(expected_train) < len(read("train.jsonl"))
    assert [row["doc"]["thing"] for row in data.train] == [row["item"] for row in expected_train]
    valid = read("valid.jsonl")
    order = np.arange(len(valid))
    np.random.seed(0)
    np.random.shuffle(order)
    assert [row["doc"]["thing"] for row in data.valid] == [valid[i]["item"] for i in order][: config.valid_size]
    # --set train_data=FILE replaces data.train's source; its options still apply
    other = task.build_config(overrides={"train_data": str(task_dir / "valid.jsonl")})
    replaced = task.load_data(other).train
    assert [row["doc"]["thing"] for row in replaced] == [row["item"] for row in valid if row["colour"] != "green"]


@pytest.mark.parametrize("source, key", [
    ({"path": "train.jsonl", "keep_if": "size > 3"}, "data.train.keep_if"),  # a field the data lacks
    ({"path": "train.jsonl", "keep_if": "colour =="}, "data.train.keep_if"),  # not an expression
    ({"path": "train.jsonl", "shuffle": 0}, "data.train.shuffle"),  # unknown option
    ({"path": "train.jsonl", "rename": ["item"]}, "data.train.rename"),
])
def test_bad_source_options_name_the_key(task_dir, tmp_path, source, key):
    message = prepare_error(edit_task(task_dir, data={"train": source, "test": "test.jsonl"}), tmp_path)
    assert "variant-" in message and f"'{key}" in message, message  # the task file and the key


def test_forgetting_loss_score_name_and_a_hub_forgetting_set(task_dir, tmp_path):
    from peftbench.tasks.task_file import read_task_file, shipped_task_file

    spec = read_task_file(edit_task(task_dir, forgetting="some-org/some-texts", forgetting_loss="peft_suite",
                                    score_name="accuracy"))
    assert (spec.forgetting, spec.forgetting_formula, spec.score_name) == ("some-org/some-texts", "peft_suite", "accuracy")
    for changes, key in [({"forgetting_loss": "shifted"}, "'forgetting_loss'"), ({"score_name": "my score!"}, "'score_name'"),
                         ({"forgetting": "missing.txt"}, "'forgetting'")]:
        with pytest.raises(ConfigError, match=key):
            read_task_file(edit_task(task_dir, **changes))
    math = get_task("math")  # the shipped task file, under its registered name
    assert (math.name, math.spec.path, math.forgetting_formula) == ("math", shipped_task_file("math"), "peft_suite")


def test_init_task_guesses_the_metric_from_the_targets(tmp_path):
    """A whole worked solution never matches exactly: GSM8K-style targets are scored on their final answer,
    solutions ending in a number on that number; short one-line answers keep exact match."""
    gsm8k_like = Path(__file__).parent / "fixtures" / "math" / "gsm8k_test.jsonl"
    solutions = tmp_path / "solutions.jsonl"
    solutions.write_text("".join(json.dumps({"question": f"{a} plus {b}?", "answer": f"Adding them gives {a + b}"})
                                 + "\n" for a, b in zip(range(20), range(5, 45, 2))))
    for data, metric in ((gsm8k_like, "final_answer"), (solutions, "last_number")):
        task_file = tmp_path / f"{metric}.yaml"
        outcome = CliRunner().invoke(app, ["init-task", str(task_file), "--data", str(data)])
        assert outcome.exit_code == 0, outcome.output
        spec = yaml.safe_load(task_file.read_text())
        assert spec["metric"] == metric
        assert "until" not in spec["generation_kwargs"]  # a solution runs over several lines: until EOS
        assert 64 <= spec["generation_kwargs"]["max_gen_toks"] <= 512


# ---- data that is not what it says: refused before any model loads, naming the file, the row and the field ----
def test_a_byte_that_is_not_utf8_names_the_file_and_line(task_dir, tmp_path):
    with open(task_dir / "train.jsonl", "ab") as handle:
        handle.write(b'{"item": "a \xff pear", "colour": "green"}\n')
    lines = (task_dir / "train.jsonl").read_bytes().count(b"\n")
    message = prepare_error(task_dir / "fruit_colour.yaml", tmp_path)
    assert "train.jsonl" in message and f"line {lines} is not UTF-8" in message and "0xff" in message
    # the same file through --set train_data= on math-tiny: refused in the parent, before any child starts
    outcome = CliRunner().invoke(app, [
        "run", str(QUICK / "lora" / "rank16"), "--set", f"train_data={task_dir / 'train.jsonl'}",
        "--results", str(tmp_path / "results"),
    ])
    assert outcome.exit_code == 2 and "not UTF-8" in outcome.output.replace("\n", " ")
    assert not (tmp_path / "results").exists()
    # init-task reads the data too
    outcome = CliRunner().invoke(app, ["init-task", str(tmp_path / "new.yaml"), "--data", str(task_dir / "train.jsonl")])
    assert outcome.exit_code == 2 and "not UTF-8" in outcome.output.replace("\n", " ")


@pytest.mark.parametrize("template", ["{colour}", "colour", "{{ colour }}"])
def test_a_row_without_the_target_field_is_an_error_not_the_text_none(task_dir, tmp_path, template):
    with open(task_dir / "train.jsonl", "a") as handle:
        handle.write('{"item": "a plum"}\n')
    message = prepare_error(edit_task(task_dir, doc_to_target=template), tmp_path)
    assert "data.train" in message and "train.jsonl" in message and "a plum" in message and "no value" in message


def test_a_jinja_conditional_on_a_null_field_still_renders(task_dir):
    with open(task_dir / "train.jsonl", "a") as handle:
        handle.write('{"item": "a plum", "colour": "purple"}\n')
    task = get_task(str(edit_task(task_dir, doc_to_text="{{ item }}{% if options %} ({{ options|join('/') }}){% endif %}?")))
    rows = task.load_data(_config(task)).train
    assert any(row["query"] == "a plum?" for row in rows)


def _lengthen_items(path: Path, every: int) -> int:
    """Give every `every`-th row an item of about 800 tokens (past math-tiny's max_seq_length of 256); returns how many."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for index in range(0, len(rows), every):
        rows[index]["item"] = "a " + "very " * 800 + "ripe pear"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return len(range(0, len(rows), every))


def test_rows_whose_prompt_fills_max_seq_length_are_left_out_and_counted(task_dir, tmp_path):
    """loss_on completion: a row cut before its response has no label; batched together (longest first) such
    rows made the loss 0/0 and the run `diverged` at step 1, a status a rerun keeps as final."""
    long_rows = _lengthen_items(task_dir / "train.jsonl", every=4)
    result = run_in_process(task_dir / "fruit_colour.yaml", QUICK / "lora" / "rank16", tmp_path / "results")
    info = result["meta_info"]["dataset_info"]
    assert info["train_rows_left_out"] == long_rows and "max_seq_length" in info["train_rows_left_out_because"]
    assert all(entry["loss"] == entry["loss"] for entry in result["peftbench"]["train_curve"])  # no nan


def test_no_row_with_a_response_left_is_refused_naming_max_seq_length_and_rerun(task_dir, tmp_path):
    from peftbench.runners.isolated import should_skip

    _lengthen_items(task_dir / "train.jsonl", every=1)
    request = RunRequest(task=str(task_dir / "fruit_colour.yaml"), results_dir=str(tmp_path / "results"),
                         experiment_dir=str(QUICK / "lora" / "rank16"), save_checkpoint=False, show_progress=False)
    path, status = execute(request)
    error = json.loads(path.read_text())["peftbench"]["error_msg"]
    assert status == "failed" and "'max_seq_length'" in error and "every training row" in error
    assert not should_skip(path, force=False)  # bad input is not a final word: fixed data runs again


# ---- scorers: a function in a file beside the task file, given a time limit ----
@pytest.mark.parametrize("metric", ["os:system", "shutil:rmtree", "colour_scorer:system"])
def test_a_scorer_is_a_function_of_a_file_beside_the_task_file_not_any_callable(task_dir, tmp_path, metric):
    with open(task_dir / "colour_scorer.py", "a") as handle:
        handle.write("\nfrom os import system\n")
    message = prepare_error(edit_task(task_dir, metric=metric), tmp_path)
    assert "'metric'" in message and ("no scorer file" in message or "defines no function" in message)


def test_a_scorer_that_never_returns_fails_the_run_naming_it_and_the_adapter_is_kept(task_dir, tmp_path):
    # stuck on its first call, for longer than any test waits (without a time limit the run would end, scored)
    (task_dir / "stuck_scorer.py").write_text(
        "import time\n\nCALLS = []\n\n\ndef stuck(prediction, row):\n    CALLS.append(1)\n"
        "    if len(CALLS) == 1:\n        time.sleep(60)\n    return True\n"
    )
    request = RunRequest(task=str(edit_task(task_dir, metric="stuck_scorer:stuck")), results_dir=str(tmp_path / "results"),
                         experiment_dir=str(QUICK / "lora" / "rank16"), show_progress=False,
                         overrides={"valid_size": 0, "scorer_timeout_s": 0.5})
    path, status = execute(request)
    result = json.loads(path.read_text())["peftbench"]
    assert status == "failed"
    assert "stuck_scorer:stuck" in result["error_msg"] and "did not return within 0.5 s" in result["error_msg"]
    assert "scorer_timeout_s" in result["error_msg"]
    # the scorer failed after training: the trained adapter is on disk all the same
    assert (Path(result["checkpoint_dir"]) / "adapter_model.safetensors").is_file()
    assert json.loads(path.read_text())["run_info"]["train_config"]["scorer_timeout_s"] == 0.5  # recorded


def test_default_forgetting_of_a_local_model_offline_fails_at_once_naming_the_key(task_dir, tmp_path, monkeypatch):
    """`forgetting: default` streams rows of a hub dataset for any model but the shipped one: offline that would be
    half a minute of retries, then a ConnectionError traceback: the key is refused at once instead."""
    from peftbench.tasks.task_file import builtin_model_path

    model = tmp_path / "local-model"
    shutil.copytree(builtin_model_path("tiny-math-llama"), model)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = prepare_error(edit_task(task_dir, model=str(model)), tmp_path)
    assert "variant-0.yaml" in message and "'forgetting'" in message and "HuggingFaceFW/finewiki" in message
    assert "offline" in message
    # a local forgetting file, or none, needs no hub
    (task_dir / "held_out.txt").write_text("Pears ripen from the inside.\nLimes stay green.\n")
    for forgetting in ("held_out.txt", "none"):
        task = get_task(str(edit_task(task_dir, model=str(model), forgetting=forgetting)))
        task.check_inputs(_config(task))
