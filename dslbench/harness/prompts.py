"""Prompts as a backend sees them: the chat template, tokenisation with BOS, left padding, and
over-long prompts cut in the middle to fit ``max_length`` (counted, recorded and warned once)."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

# A task's generation kwarg ``prompt_format`` (absent: the prompt as lm-eval gives it, BOS added):
# chat = one user turn through the model's chat template, tokenized without added special tokens
# (the template carries BOS); raw = the text tokenized without any special token, no BOS. Both are
# how the released open-ended script builds its prompts (``--prompts`` and ``--prefixes``);
# none = unconditional generation (the ``dsl_uncond_*`` tasks): the model sees no prompt at all
# (no BOS: MDLM / ReMDM sample from an all-mask canvas) and the request's text is only the
# sample's name, from which its seed is derived (every empty prompt would otherwise share one).
PROMPT_FORMATS = ("chat", "raw", "none")
UNCONDITIONAL = "none"
_PROBE = "\x00dslbench-probe\x00"


def check_prompt_format(backend: str, value: str | None) -> str | None:
    if value is not None and value not in PROMPT_FORMATS:
        raise ValueError(f"{backend}: generation kwarg prompt_format={value!r}; allowed: {', '.join(PROMPT_FORMATS)}")
    return value


class PromptMixin:
    """Needs ``self.tokenizer``, ``self.info``, ``self.args``, ``self.max_length``, ``self.device``."""

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return getattr(self.tokenizer, "chat_template", None) or ""

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(
                f"{self.NAME}: --apply_chat_template was given but {self.args['pretrained']} has no chat template"
            )
        return self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def _template_head(self) -> str:
        """What the chat template writes before a user message's content ('' without a template)."""
        if not getattr(self.tokenizer, "chat_template", None):
            return ""
        rendered = self.apply_chat_template([{"role": "user", "content": _PROBE}])
        return rendered.split(_PROBE)[0]

    def _format_prompt(self, text: str, prompt_format: str | None) -> str:
        """The prompt string a task's ``prompt_format`` asks for. A prompt lm-eval already put
        through the template (``--apply_chat_template``) is not templated twice; a ``raw`` task
        refuses one, since its released protocol has no template."""
        check_prompt_format(self.NAME, prompt_format)
        if prompt_format is None:
            return text
        head = self._template_head()
        templated = bool(head) and text.startswith(head)
        if prompt_format in ("raw", UNCONDITIONAL):
            if templated:
                raise ValueError(
                    f"{self.NAME}: this task's prompts are plain text without a chat template (prompt_format="
                    f"{prompt_format}, as released); run it without --apply_chat_template"
                )
            return text
        if not head:
            raise ValueError(
                f"{self.NAME}: this task applies the chat template (prompt_format=chat, as released) but "
                f"{self.args['pretrained']} has no chat template"
            )
        return text if templated else self.apply_chat_template([{"role": "user", "content": text}])

    def _encode_context(self, text: str, prompt_format: str | None = None) -> list[int]:
        if prompt_format == UNCONDITIONAL:  # the text names the sample; the model sees nothing
            return []
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if prompt_format is not None:  # chat: the template holds BOS; raw: none, as released
            return ids
        bos = self.tokenizer.bos_token_id
        # Chat templates already start with BOS; plain prompts get one, as in pre-training.
        if bos is not None and (not ids or ids[0] != bos):
            ids = [bos, *ids]
        return ids

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.info.eos_id
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            if r:
                ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
                mask[i, width - len(r):] = 1
        return ids.to(self.device), mask.to(self.device)

    @staticmethod
    def _cut_range(n_tokens: int, budget: int, tail: int = 32) -> tuple[int, int]:
        """The token positions ``[start, stop)`` that :meth:`_fit_prompt` drops (empty when it fits)."""
        if n_tokens <= budget:
            return n_tokens, n_tokens
        tail = min(tail, budget // 4)
        return budget - tail, n_tokens - tail

    @classmethod
    def _fit_prompt(cls, ids: list[int], budget: int, tail: int = 32) -> list[int]:
        """Cut an over-long prompt in the middle: the head holds BOS, the chat header and the
        instruction (and the start of the source), the last ``tail`` tokens the end of the turn, the
        assistant header and, where those are shorter, the source's own last tokens; the tokens
        dropped are the middle of the source document, not its end (their count goes into the
        per-sample record)."""
        start, stop = cls._cut_range(len(ids), budget, tail)
        return ids[:start] + ids[stop:]

    def _dropped_text(self, prompt: str, ids: list[int], start: int, stop: int) -> str:
        """The exact characters of ``prompt`` behind the dropped token positions ``[start, stop)``
        of ``ids`` (its encoding; a BOS we prepended has no characters). Metrics use it to score
        against the source the model saw; a slow tokenizer without offsets decodes the slice."""
        if start >= stop:
            return ""
        try:
            offsets = self.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        except (NotImplementedError, ValueError, KeyError):
            return self.tokenizer.decode(ids[start:stop], skip_special_tokens=True)
        shift = len(ids) - len(offsets)  # 1 when _encode_context prepended BOS
        return prompt[offsets[start - shift][0] : offsets[stop - 1 - shift][1]]

    def _warn_truncated(self) -> None:
        """One warning per run (per generate_until call) with the count of cut prompts."""
        counts = getattr(self, "_truncated", None)
        if counts and counts[0]:
            log.warning(
                "%s: %d of %d prompts were longer than max_length=%d minus gen_length and were cut in "
                "the middle (the source document loses a middle stretch; its start and the prompt's last "
                "tokens are kept); each sample's record holds "
                "prompt_tokens_dropped and the task reports truncated_rate",
                self.NAME, counts[0], counts[1], self.max_length,
            )
        self._truncated = [0, 0]
