"""Loading a saved adapter onto a base model, all or nothing.

`PeftModel.from_pretrained` only warns when checkpoint keys are missing from the model, and says nothing about
checkpoint keys the model has no place for; either way the adapter weights it did not find stay at their
initial values, which for most methods is a no-op. A partly loaded adapter must never be measured or converted,
so every place that loads a checkpoint goes through `load_adapter_strictly`.
"""

from __future__ import annotations

from pathlib import Path

from peftbench.config import ConfigError

# how many key names an error message lists before it says "and N more"
_KEYS_SHOWN = 5


class AdapterLoadError(ConfigError):
    """The checkpoint's weights do not match the adapter that its config builds on this base model."""


def _sample(keys: set[str]) -> str:
    shown = sorted(keys)[:_KEYS_SHOWN]
    more = f" and {len(keys) - len(shown)} more" if len(keys) > len(shown) else ""
    return ", ".join(shown) + more


def load_adapter_strictly(base_model, adapter_dir: str | Path, *, is_trainable: bool = False):
    """`PeftModel.from_pretrained(base_model, adapter_dir)`, then a check that the checkpoint file holds exactly
    the tensors that this model's adapter consists of (what its `save_pretrained` would write).

    Raises AdapterLoadError naming the folder, the base model's class and the keys that differ.
    """
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict, load_peft_weights

    adapter_dir = str(adapter_dir)
    model = PeftModel.from_pretrained(base_model, adapter_dir, is_trainable=is_trainable)
    adapter_name = model.active_adapter
    peft_config = model.peft_config[adapter_name]
    # the same key mapping from_pretrained applies, so both sides name modules alike
    key_mapping = None
    if not peft_config.is_prompt_learning:
        key_mapping = getattr(base_model, "_checkpoint_conversion_mapping", None)
    in_file = set(load_peft_weights(adapter_dir, device="cpu", key_mapping=key_mapping or None))
    # save_embedding_layers=False: what the adapter itself consists of; True adds the (resized) embedding layers
    # that save_pretrained may also write, which are not adapter weights but are expected in a file
    adapter_keys = set(get_peft_model_state_dict(model, adapter_name=adapter_name, save_embedding_layers=False))
    may_hold = adapter_keys | set(
        get_peft_model_state_dict(model, adapter_name=adapter_name, save_embedding_layers=True)
    )
    missing, unexpected = adapter_keys - in_file, in_file - may_hold
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(
                f"{len(missing)} adapter weights of the model are not in the checkpoint ({_sample(missing)})"
            )
        if unexpected:
            problems.append(
                f"{len(unexpected)} checkpoint weights have no place in the model ({_sample(unexpected)})"
            )
        raise AdapterLoadError(
            f"{adapter_dir}: the adapter does not fit the base model as loaded ({type(base_model).__name__}): "
            f"{'; '.join(problems)}. Loading it would leave those weights at their initial values. Load the base "
            "model with the class the adapter was trained on (e.g. a ...ForCausalLM, not the bare model)."
        )
    return model
