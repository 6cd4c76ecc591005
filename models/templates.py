"""Turn a preset's segment template into token ids, truncating only the free-text field."""

from __future__ import annotations

from dataclasses import dataclass

from models.errors import InputTooLong

TRUNCATABLE = ("{text}", "{document}")


@dataclass
class Rendered:
    ids: list[int]
    truncated: int  # tokens removed from the free-text field
    tail: int  # tokens of the last segment (a query-likelihood reranker scores them)


class TemplateRenderer:
    """Caches the ids of literal segments; renders one input per call."""

    def __init__(self, tokenizer, template: tuple[str, ...], max_length: int):
        self.tokenizer = tokenizer
        self.template = template
        self.max_length = max_length
        self._literal: dict[str, list[int]] = {}
        special = {"<bos>": tokenizer.bos_token_id, "<eos>": tokenizer.eos_token_id,
                   "<cls>": getattr(tokenizer, "cls_token_id", None), "<sep>": getattr(tokenizer, "sep_token_id", None)}
        for seg in template:
            if seg in special:
                if special[seg] is None:
                    raise ValueError(f"template needs {seg} but the tokenizer has none")
                self._literal[seg] = [special[seg]]
            elif "{" not in seg:
                self._literal[seg] = self._encode(seg)
        free = [s for s in template if any(f in s for f in TRUNCATABLE)]
        if len(free) != 1:
            raise ValueError(f"template must have exactly one of {TRUNCATABLE}: {template}")
        self._free = free[0]

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def render(self, fields: dict[str, str], truncate: bool, label: str = "input") -> Rendered:
        pieces = []
        for seg in self.template:
            pieces.append(self._literal[seg] if seg in self._literal else self._encode(seg.format(**fields)))
        free_i = self.template.index(self._free)
        total = sum(len(p) for p in pieces)
        fixed = total - len(pieces[free_i])
        over = total - self.max_length
        if over > 0:
            if not truncate:
                raise InputTooLong(
                    f"{label} has {total} tokens, over the model's limit of {self.max_length}; "
                    "send shorter text or set truncate=true"
                )
            if over >= len(pieces[free_i]):
                raise InputTooLong(
                    f"{label}: the query and prompt alone take {fixed} of {self.max_length} tokens"
                )
            pieces[free_i] = pieces[free_i][: len(pieces[free_i]) - over]
        return Rendered([t for p in pieces for t in p], max(over, 0), len(pieces[-1]))
