"""Forgetting: mean per-token cross-entropy of a causal LM on held-out text.

Two measures: `mean_token_loss`, the next-token loss (peftbench's), and `peft_suite_token_loss`, the PEFT
MetaMathQA suite's own formula, which the `math` task uses so that its forgetting compares with the
published numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.inference_mode()
def mean_token_loss(model, tokenizer, texts: list[str], *, batch_size: int, max_length: int) -> float:
    """Mean cross-entropy per predicted token over all `texts` (every token weighs the same, so long texts
    are not diluted). Targets are shifted: the logits at position t predict token t+1."""
    if not texts:
        return float("nan")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total_loss = 0.0
    total_tokens = 0
    for start in range(0, len(texts), batch_size):
        encoded = tokenizer(
            texts[start : start + batch_size], return_tensors="pt", padding=True, padding_side="right",
            truncation=True, max_length=max_length,
        ).to(device)
        input_ids, mask = encoded["input_ids"], encoded["attention_mask"]
        logits = model(input_ids=input_ids, attention_mask=mask).logits
        # prompt-learning methods prepend virtual tokens to the logits; keep the positions of the real tokens
        logits = logits[:, -input_ids.shape[1] :, :].float()
        token_losses = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1), reduction="none"
        )
        target_mask = mask[:, 1:].reshape(-1).bool()
        total_loss += float(token_losses[target_mask].sum())
        total_tokens += int(target_mask.sum())
    model.train(was_training)
    return total_loss / max(total_tokens, 1)


@torch.inference_mode()
def peft_suite_token_loss(model, tokenizer, texts: list[str], *, batch_size: int, max_length: int) -> float:
    """The PEFT suite's `calculate_mean_per_token_loss` (method_comparison/MetaMathQA/run.py): left-padded
    batches, and the cross-entropy of the logits at each real position against the token AT that position
    (not shifted to the next one), averaged over all tokens. It is not a next-token loss (on the tiny
    model it is about 15 where the next-token loss is 0.5), but it is the published `forgetting`'s."""
    if not texts:
        return float("nan")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    losses: list[torch.Tensor] = []
    for start in range(0, len(texts), batch_size):
        encoded = tokenizer(texts[start : start + batch_size], truncation=True, max_length=max_length)
        batch = tokenizer.pad(encoded, return_tensors="pt", padding_side="left").to(device)
        logits = model(**batch).logits
        for logit, target, mask in zip(logits, batch["input_ids"], batch["attention_mask"]):
            count = int(mask.sum())
            losses.append(F.cross_entropy(logit[-count:], target[-count:], reduction="none"))
    model.train(was_training)
    return torch.cat(losses).mean().item()
