"""The backend protocol against real embedded models (llama.cpp through llama-cpp-python)."""

from ensemble_instruct.backends import GenParams, make_backend
from ensemble_instruct.config import MemberConfig

TASKS = "Come up with a series of tasks:\n1. Name three kinds of cloud. |EoS|\n2. Explain how a lock works. |EoS|\n3."
SAMPLED = GenParams(temperature=0.7, top_k=50, max_new_tokens=30, stop=("|EoS|",), seed=11)


def test_greedy_is_deterministic(smollm2):
    params = GenParams(max_new_tokens=24)
    first, second = smollm2.generate([TASKS, TASKS], params)
    assert first.ok and first.text.strip()
    assert first.text == second.text


def test_same_seed_same_sample_in_any_call_order(smollm2):
    prompts = [TASKS, "Q: What is two plus two?\nA:", TASKS.replace("cloud", "bird")]
    forward = [c.text for c in smollm2.generate(prompts, SAMPLED)]
    backward = [c.text for c in smollm2.generate(prompts[::-1], SAMPLED)][::-1]
    assert forward == backward  # what makes a resumed run equal to an uninterrupted one


def test_different_seeds_give_different_samples(smollm2):
    texts = {c.text for c in smollm2.generate([TASKS] * 4, [SAMPLED.with_seed(s) for s in range(4)])}
    assert len(texts) > 1


def test_stop_sequences_apply_from_the_first_token(smollm2):
    for done in smollm2.generate([TASKS, "List: apples,"], GenParams(max_new_tokens=40, stop=("\n", ","))):
        assert "\n" not in done.text and "," not in done.text


def test_min_new_tokens_blocks_end_of_sequence(smollm2):
    chat = [{"role": "user", "content": "What is 2+2? Reply with the number only."}]
    short = smollm2.generate([chat], GenParams(max_new_tokens=40))[0]
    longer = smollm2.generate([chat], GenParams(max_new_tokens=40, min_new_tokens=25))[0]
    assert short.completion_tokens < 25
    assert longer.completion_tokens >= 25


def test_length_limit_is_reported(smollm2):
    done = smollm2.generate([TASKS], GenParams(max_new_tokens=3, temperature=0.7, top_k=50, seed=1))[0]
    assert done.finish_reason == "length" and done.completion_tokens == 3


def test_chat_uses_the_models_template_and_completion_does_not(smollm2):
    chat = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    assert "<|im_start|>user" in smollm2.render(chat)
    assert smollm2.render("plain text") == "plain text"
    answer = smollm2.generate([chat], GenParams(max_new_tokens=10))[0]
    assert "paris" in answer.text.lower()


def test_a_shared_prefix_is_served_from_cache(smollm2):
    prefix = "Here are examples.\n" + "\n".join(f"{i}. Task number {i} is to count to {i}." for i in range(40))
    first = smollm2.generate([prefix + "\n41."], GenParams(max_new_tokens=4))[0]
    again = smollm2.generate([prefix + "\n42."], GenParams(max_new_tokens=4))[0]
    assert again.prompt_tokens > 256
    assert again.cached_tokens >= again.prompt_tokens - 64 - 8
    assert first.cached_tokens < again.cached_tokens


def test_a_prompt_longer_than_the_context_is_an_error_value(smollm2):
    done = smollm2.generate(["word " * 3000], GenParams(max_new_tokens=4))[0]
    assert not done.ok and "exceeds the context" in done.error


def test_base_model_from_the_registry_is_not_instruction_tuned(gemma_path):
    backend = make_backend(MemberConfig(name="g", model="gemma-3-270m", n_ctx=1024))
    try:
        assert backend.instruction_tuned is False
        done = backend.generate(["The colour of the sky on a clear day is"], GenParams(max_new_tokens=5))[0]
        assert done.ok and done.text.strip()
    finally:
        backend.close()
