"""Do LF's chat templates render what LlamaFactory 0.9.5's templates of the same name render?

Two steps, because the two never share a virtual environment:

    # 1. in a venv with llamafactory 0.9.5: write its renderings (the fixture the tests read)
    /tmp/lfvenv/bin/python bench/template_parity.py dump tests/fixtures/templates/llamafactory_0.9.5.json
    # 2. in LF's venv: render the same conversations with LF and print the table
    uv run python bench/template_parity.py compare tests/fixtures/templates/llamafactory_0.9.5.json [--all]

Each conversation is rendered to (prompt, response) text pairs: the pieces training tokenises and
labels. LlamaFactory's side goes through a stand-in tokenizer that maps each piece of text to one
id and back, so the text is exact (its special tokens come out as their text). A conversation that
ends with a user turn is a generation prompt (LlamaFactory's `encode_oneturn` with an empty answer).
Templates that write tools (their tool format is not the generic `default`) also get tool cases.

`compare` prints: template, case, same/different and the first differing characters; templates
in `KNOWN_DIFFERENCES` (tests/lf_data/test_template_parity.py) are marked `documented`.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

U1 = {"role": "user", "content": "Who are you?"}
A1 = {"role": "assistant", "content": "I am Lumen."}
U2 = {"role": "user", "content": "What is 2+2?"}
A2 = {"role": "assistant", "content": "4."}
SYSTEM = "Be brief."
TOOLS = json.dumps([{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}},
                   "required": ["city"]}}}])
CALL = {"role": "function", "content": json.dumps({"name": "get_weather", "arguments": {"city": "Paris"}})}
RESULT = {"role": "observation", "content": '{"sky": "clear"}'}
ANSWER = {"role": "assistant", "content": "Clear skies."}
THINK = {"role": "assistant", "content": "<think>\nAdd two and two.\n</think>\n\n4."}

CASES: dict[str, dict] = {
    "one turn": {"messages": [U1, A1]},
    "one turn, system": {"messages": [U1, A1], "system": SYSTEM},
    "two turns": {"messages": [U1, A1, U2, A2]},
    "two turns, system": {"messages": [U1, A1, U2, A2], "system": SYSTEM},
    "prompt": {"messages": [U1]},
    "prompt after history, system": {"messages": [U1, A1, U2], "system": SYSTEM},
    "reasoning": {"messages": [U2, THINK], "thinking": True},
    "tools, call, result, answer": {"messages": [U1, CALL, RESULT, ANSWER], "system": SYSTEM, "tools": TOOLS,
                                    "tools_only": True},
    "tool result prompt": {"messages": [U1, CALL, RESULT], "tools": TOOLS, "tools_only": True},
}
"""`thinking`: only for templates with a reasoning format; `tools_only`: only for templates with a
tool format of their own."""

# The model's bos / eos for templates that write them through the tokenizer (LlamaFactory's
# {"bos_token"} / {"eos_token"}, LF's {bos} / {eos}); everything else gets <s> / </s>.
SPECIALS: dict[str, tuple[str | None, str]] = {
    **{n: ("<bos>", "<eos>") for n in ("gemma", "gemma2", "gemma3", "gemma3n", "gemma4", "gemma4n",
                                        "paligemma", "paligemma_chat")},
    **{n: (None, "<|im_end|>") for n in ("qwen", "qwen2_vl", "qwen2_audio", "qwen2_omni", "qwen3", "qwen3_nothink",
                                          "qwen3_vl", "qwen3_vl_nothink", "qwen3_5", "qwen3_5_nothink", "qwen3_6",
                                          "qwen3_omni", "qwen3_omni_nothink", "keye_vl", "dots_ocr", "mimo",
                                          "mimo_v2", "mimo_vl")},
    **{n: ("<|begin_of_text|>", "<|eot_id|>") for n in ("llama3", "mllama", "llava_next_llama3")},
    **{n: ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>") for n in ("deepseek3", "deepseekr1", "moonlight")},
    **{n: (None, "<|endoftext|>") for n in ("glm4", "chatglm3", "codegeex4", "glm4_moe", "glm4v", "glm4_5v",
                                             "glm4_7", "glmz1", "glm_ocr", "aeva")},
    **{n: (None, "<|end_of_text|>") for n in ("granite", "granite3", "granite3_vision", "granite4")},
    "llama4": ("<|begin_of_text|>", "<|eot|>"), "openchat-3.6": ("<|begin_of_text|>", "<|eot_id|>"),
    "seed_coder": ("<[begin▁of▁sentence]>", "<[end▁of▁sentence]>"), "cohere": ("<BOS_TOKEN>", "<|END_OF_TURN_TOKEN|>"),
    "exaone": ("[BOS]", "[|endofturn|]"), "openchat": ("<s>", "<|end_of_turn|>"),
    "phi_small": ("<|endoftext|>", "<|endoftext|>"), "seed_oss": ("<seed:bos>", "<seed:eos>"),
    "hunyuan": ("<|startoftext|>", "<|eos|>"),
}


def specials(name: str) -> tuple[str | None, str]:
    return SPECIALS.get(name, ("<s>", "</s>"))


# -- LlamaFactory's side (its venv) -------------------------------------------------------------------
class PieceTokenizer:
    """A stand-in tokenizer: each piece of text is one id, so ids decode back to the exact text."""

    def __init__(self, bos: str | None, eos: str) -> None:
        self.pieces: list[str] = []
        self.ids: dict[str, int] = {}
        self.bos_token, self.eos_token, self.pad_token = bos, eos, eos

    def _id(self, piece: str) -> int:
        if piece not in self.ids:
            self.ids[piece] = len(self.pieces)
            self.pieces.append(piece)
        return self.ids[piece]

    @property
    def bos_token_id(self) -> int | None:
        return None if self.bos_token is None else self._id(self.bos_token)

    @property
    def eos_token_id(self) -> int:
        return self._id(self.eos_token)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [self._id(text)] if text else []

    def convert_tokens_to_ids(self, token: str) -> int:
        return self._id(token)

    def decode(self, ids: list[int]) -> str:
        return "".join(self.pieces[i] for i in ids)


def llamafactory_renderings() -> dict:
    from llamafactory.data.template import TEMPLATES, ReasoningTemplate

    out: dict[str, dict] = {}
    for name in sorted(TEMPLATES):
        template = copy.deepcopy(TEMPLATES[name])
        reasoning = isinstance(template, ReasoningTemplate)
        if reasoning:  # what get_template_and_fix_tokenizer does with LlamaFactory's defaults
            template.enable_thinking, template.preserve_thinking = True, False
        bos, eos = specials(name)
        if template.replace_eos:
            eos = template.stop_words[0]
        tokenizer = PieceTokenizer(bos, eos)
        tool_format = getattr(template.format_tools, "tool_format", "default")
        entry = {"tool_format": tool_format, "reasoning": reasoning, "efficient_eos": template.efficient_eos,
                 "multimodal": type(template.mm_plugin).__name__ != "BasePlugin", "eos": eos, "cases": {}}
        for case, spec in CASES.items():
            messages = copy.deepcopy(spec["messages"])
            system, tools = spec.get("system"), spec.get("tools")
            if spec.get("tools_only") and tool_format == "default":
                continue
            if spec.get("thinking") and not reasoning:
                continue
            try:
                if len(messages) % 2:  # a generation prompt, as LlamaFactory's chat engines build it
                    prompt, _ = template.encode_oneturn(tokenizer, [*messages, {"role": "assistant", "content": ""}],
                                                        system, tools)
                    pairs = [[tokenizer.decode(prompt), ""]]
                else:
                    pairs = [[tokenizer.decode(p), tokenizer.decode(r)]
                             for p, r in template.encode_multiturn(tokenizer, messages, system, tools)]
            except Exception as err:  # noqa: BLE001 - record what LlamaFactory refuses
                pairs = f"error: {type(err).__name__}: {err}"
            entry["cases"][case] = pairs
        out[name] = entry
    return out


# -- LF's side (LF's venv) ----------------------------------------------------------------------------
def lf_pairs(name: str, case: dict, bos: str | None, eos: str) -> list[list[str]]:
    """LF's rendering of one case: the whole prompt (history included) as one piece for a
    generation prompt, else each (prompt, response) pair."""
    from types import SimpleNamespace

    from lf_data.templates import get_template

    tokenizer = SimpleNamespace(bos_token=bos, eos_token=eos)
    pairs = get_template(name).render_pairs(case["messages"], case.get("system"), tokenizer, case.get("tools"))
    if len(case["messages"]) % 2:
        return [["".join(p + r for p, r in pairs), ""]]
    return [list(p) for p in pairs]


def first_difference(ours: list[list[str]], theirs: list[list[str]] | str) -> str | None:
    """Where two renderings first part, with a little context; None when equal."""
    if isinstance(theirs, str):
        return theirs
    if ours == theirs:
        return None
    for i, (a, b) in enumerate(zip(ours, theirs, strict=False)):
        for part, x, y in (("prompt", a[0], b[0]), ("response", a[1], b[1])):
            if x != y:
                at = next((k for k, (c, d) in enumerate(zip(x, y, strict=False)) if c != d), min(len(x), len(y)))
                start = max(0, at - 12)
                return f"pair {i} {part} @{at}: LF {x[start:at + 24]!r} vs LlamaFactory {y[start:at + 24]!r}"
    return f"{len(ours)} pairs vs {len(theirs)}"


def compare(fixture: Path, show_all: bool) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "lf_data"))
    from test_template_parity import KNOWN_DIFFERENCES, known_difference  # noqa: PLC0415

    from lf_data.templates import TEMPLATES

    data = json.loads(fixture.read_text(encoding="utf-8"))
    rows, unexplained = [], 0
    for name, entry in sorted(data["templates"].items()):
        if name not in TEMPLATES:
            rows.append((name, "-", "MISSING in LF", ""))
            unexplained += 1
            continue
        for case, theirs in entry["cases"].items():
            ours = lf_pairs(name, data["cases"][case], entry["bos"], entry["lf_eos"])
            diff = first_difference(ours, theirs)
            reason = known_difference(name, case)
            if diff is None:
                verdict = "same"
            elif reason:
                verdict = "documented"
            else:
                verdict, unexplained = "DIFFERENT", unexplained + 1
            if show_all or verdict != "same":
                rows.append((name, case, verdict, diff or ""))
    width = max(len(r[0]) for r in rows) if rows else 10
    for name, case, verdict, diff in rows:
        print(f"{name:<{width}}  {case:<30}  {verdict:<10}  {diff}")
    total = sum(len(e["cases"]) for e in data["templates"].values())
    print(f"\n{len(data['templates'])} templates, {total} renderings, {unexplained} unexplained differences; "
          f"{len(KNOWN_DIFFERENCES)} templates with documented differences")
    return 1 if unexplained else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["dump", "compare"])
    parser.add_argument("fixture", type=Path)
    parser.add_argument("--all", action="store_true", help="also list the renderings that agree")
    args = parser.parse_args()
    if args.command == "compare":
        return compare(args.fixture, args.all)
    import llamafactory

    templates = llamafactory_renderings()
    for name, entry in templates.items():
        entry["bos"], entry["lf_eos"] = specials(name)
    payload = {"llamafactory": llamafactory.__version__, "cases": CASES, "templates": templates}
    args.fixture.write_text(json.dumps(payload, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(templates)} templates to {args.fixture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
