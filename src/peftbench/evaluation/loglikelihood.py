"""Log-likelihood of continuations given contexts, for multiple-choice scoring (as lm-evaluation-harness)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def split_tokens(tokenizer, context: str, continuation: str) -> tuple[list[int], int]:
    """Token ids of context + continuation and the number of continuation tokens. The pair is tokenized
    whole and the context's own tokens are cut off (lm-eval's way), so that merges across the boundary are
    the ones the model sees; a continuation always keeps at least its last token."""
    whole = tokenizer(context + continuation)["input_ids"]
    context_length = len(tokenizer(context)["input_ids"])
    return whole, max(1, len(whole) - context_length)


@torch.inference_mode()
def continuation_logprobs(model, tokenizer, pairs: list[tuple[str, str]], *, batch_size: int,
                          max_length: int) -> list[float]:
    """Sum of the log-probabilities of each continuation's tokens given its context. Sequences longer than
    `max_length` lose tokens on the left (the continuation is kept whole)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    encoded = [split_tokens(tokenizer, context, continuation) for context, continuation in pairs]
    encoded = [(ids[-max_length:], min(n, max_length - 1)) for ids, n in encoded]
    scores: list[float] = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        input_ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, (ids, _) in enumerate(chunk):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
        logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
        # prompt-learning methods prepend virtual tokens to the logits; keep the positions of the real tokens
        logprobs = F.log_softmax(logits[:, -width:, :].float(), dim=-1).cpu()
        for row, (ids, count) in enumerate(chunk):
            # the logits at position t predict token t+1
            positions = torch.arange(len(ids) - count - 1, len(ids) - 1)
            targets = torch.tensor(ids[len(ids) - count :])
            scores.append(float(logprobs[row, positions, targets].sum()))
    model.train(was_training)
    return scores
