import pytest

from lf_data.errors import ConfigError, DataError
from lf_data.supervised import IGNORE_INDEX, encode_supervised, truncate_pair
from lf_data.templates import TEMPLATES, get_template

CONVERSATION = [
    {"role": "user", "content": "Who are you?"},
    {"role": "assistant", "content": "I am Lumen."},
    {"role": "user", "content": "Who made you?"},
    {"role": "assistant", "content": "The LF team."},
]
# SmolLM2-135M-Instruct's own chat template, as its tokenizer ships it.
SMOLLM2_JINJA = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@pytest.mark.parametrize("system", [None, "Be brief."])
def test_saved_jinja_renders_exactly_what_training_sees(name, system, tiny_tokenizer):
    template = TEMPLATES[name]
    tiny_tokenizer.chat_template = template.to_jinja()
    head = [{"role": "system", "content": system}] if system else []
    pairs = template.render_pairs(CONVERSATION, system, tiny_tokenizer)
    training_text = "".join(p + r for p, r in pairs)
    assert tiny_tokenizer.apply_chat_template(head + CONVERSATION, tokenize=False) == training_text
    prompt_text = tiny_tokenizer.apply_chat_template(head + CONVERSATION[:3], tokenize=False,
                                                     add_generation_prompt=True)
    assert prompt_text == "".join(p + r for p, r in pairs[:-1]) + pairs[-1][0]


def test_smollm2_template_matches_the_models_own(tiny_tokenizer):
    ours = TEMPLATES["smollm2"]
    tiny_tokenizer.chat_template = SMOLLM2_JINJA
    theirs = get_template("auto")
    assert ours.render_pairs(CONVERSATION, None, tiny_tokenizer) == theirs.render_pairs(CONVERSATION, None, tiny_tokenizer)
    assert ours.encode_pairs(tiny_tokenizer, CONVERSATION, "Be brief.") == \
        theirs.encode_pairs(tiny_tokenizer, CONVERSATION, "Be brief.")


def test_auto_template_gives_exact_assistant_labels(tiny_tokenizer):
    tiny_tokenizer.chat_template = SMOLLM2_JINJA
    pairs = get_template("auto").encode_pairs(tiny_tokenizer, CONVERSATION)
    input_ids, labels = encode_supervised(pairs, cutoff_len=1024)
    trained = tiny_tokenizer.decode([t for t in labels if t != IGNORE_INDEX])
    assert trained == "I am Lumen.<|im_end|>\nThe LF team.<|im_end|>\n"
    assert tiny_tokenizer.decode(input_ids) == tiny_tokenizer.apply_chat_template(CONVERSATION, tokenize=False)


def test_auto_template_refuses_templates_that_rewrite_history(tiny_tokenizer):
    tiny_tokenizer.chat_template = "{{ messages | length }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(DataError, match="rewrites earlier turns"):
        get_template("auto").encode_pairs(tiny_tokenizer, CONVERSATION)
    tiny_tokenizer.chat_template = None
    with pytest.raises(DataError, match="has no chat template"):
        get_template("auto").encode_pairs(tiny_tokenizer, CONVERSATION)


def test_unknown_template_suggests():
    with pytest.raises(ConfigError, match=r"unknown template 'smolm2'. Did you mean 'smollm2'\?"):
        get_template("smolm2")


def test_mask_history_and_train_on_prompt():
    pairs = [([1, 2], [3, 4]), ([5], [6, 7])]
    assert encode_supervised(pairs, 100) == ([1, 2, 3, 4, 5, 6, 7], [-100, -100, 3, 4, -100, 6, 7])
    assert encode_supervised(pairs, 100, mask_history=True)[1] == [-100, -100, -100, -100, -100, 6, 7]
    assert encode_supervised(pairs, 100, train_on_prompt=True)[1] == [1, 2, 3, 4, 5, 6, 7]


def test_truncation_keeps_the_response_and_respects_cutoff():
    assert truncate_pair(10, 3, 8) == (5, 3)  # a short response is kept whole
    assert truncate_pair(3, 10, 8) == (3, 5)
    assert truncate_pair(30, 30, 10) == (5, 5)
    ids, labels = encode_supervised([(list(range(30)), list(range(100, 130)))] * 2, cutoff_len=10)
    assert len(ids) == len(labels) == 10
    assert labels == [-100] * 5 + list(range(100, 105))
