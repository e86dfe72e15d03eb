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


FAMILY = "Here are examples.\n" + "\n".join(f"{i}. Task number {i} is to count to {i}." for i in range(30))
BATCH = [FAMILY + f"\n{k}. Task number" for k in (31, 32, 33, 34)]


def test_a_calls_prompts_are_decoded_together_and_read_their_shared_prefix_once(smollm2_path):
    from ensemble_instruct.backends.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend("smollm2", smollm2_path, instruction_tuned=True, n_ctx=2048)
    try:
        done = backend.generate(BATCH, SAMPLED)
    finally:
        backend.close()
    assert all(d.ok and d.text.strip() for d in done)
    # a fresh model reads the shared block once, for the first sequence; the three others share it
    first, *others = sorted(d.cached_tokens for d in done)
    assert first == 0 and others[0] > 256 and others == [others[0]] * 3


def test_a_call_gives_the_same_answers_whatever_the_cache_held_before(smollm2_path):
    """What makes a resumed run equal to an uninterrupted one: the cache of earlier calls (here a
    longer prompt of the same family, and a prompt of another) changes nothing."""
    from ensemble_instruct.backends.llamacpp import LlamaCppBackend

    fresh = LlamaCppBackend("smollm2", smollm2_path, instruction_tuned=True, n_ctx=2048)
    used = LlamaCppBackend("smollm2", smollm2_path, instruction_tuned=True, n_ctx=2048, max_slots=1)
    try:
        expected = [d.text for d in fresh.generate(BATCH, SAMPLED)]
        used.generate([FAMILY + "\n31. Task number 31 is to count to 31.\n32. Task", TASKS], SAMPLED)
        assert [d.text for d in used.generate(BATCH, SAMPLED)] == expected
        assert [d.text for d in used.generate(BATCH, SAMPLED)] == expected
    finally:
        fresh.close()
        used.close()


def test_the_thread_count_does_not_change_an_answer(smollm2_path):
    from ensemble_instruct.backends.llamacpp import LlamaCppBackend

    texts = []
    for threads in (1, 2):
        backend = LlamaCppBackend("smollm2", smollm2_path, instruction_tuned=True, n_ctx=2048, n_threads=threads)
        try:
            texts.append([d.text for d in backend.generate(BATCH, SAMPLED)])
        finally:
            backend.close()
    assert texts[0] == texts[1]


def test_a_call_larger_than_one_batch_is_split_the_same_way_every_time(smollm2_path):
    from ensemble_instruct.backends.llamacpp import LlamaCppBackend

    prompts = [[{"role": "user", "content": f"Count from {k} to {k + 5}."}] for k in range(7)]
    params = GenParams(max_new_tokens=40)
    small = LlamaCppBackend("smollm2", smollm2_path, instruction_tuned=True, n_ctx=256, max_seqs=3)
    try:
        first = small.generate(prompts, params)
        again = small.generate(prompts[::-1], params)[::-1]
    finally:
        small.close()
    assert all(d.ok and d.text.strip() for d in first)
    assert [d.text for d in first] == [d.text for d in again]


def test_likelihood_matches_llama_cpp_pythons_own_log_probabilities(smollm2, smollm2_path):
    """score() reads the prompt once and sums each answer's token log-probabilities; the library's own
    echo of prompt log-probabilities, on prompt + answer, is the reference."""
    from llama_cpp import Llama

    chat = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    answers = ["Paris.", "The capital of France is Paris.", "banana banana banana"]
    scored = smollm2.score(chat, answers)
    reference = Llama(model_path=str(smollm2_path), n_ctx=512, logits_all=True, verbose=False)
    try:
        end = "<|im_end|>"
        for answer, got in zip(answers, scored):
            text = smollm2.render(chat) + answer + end
            out = reference.create_completion(text, max_tokens=1, echo=True, logprobs=1, temperature=0)
            echoed = out["choices"][0]["logprobs"]["token_logprobs"][:-1]  # the last one is the new token
            expected = sum(echoed[-got.tokens:])
            assert abs(got.logprob - expected) < 0.05 * got.tokens
    finally:
        reference.close()
    # the model's own answer is the most likely per token; the order of the answers changes nothing
    assert scored[1].mean > scored[0].mean > scored[2].mean
    assert smollm2.score(chat, answers[::-1])[::-1] == scored


def test_a_lone_prompt_of_another_family_does_not_shorten_a_familys_shared_prefix():
    from ensemble_instruct.backends.llamacpp_context import BLOCK, Job, prefix_groups

    head = list(range(7 * BLOCK))  # what the two families share (the start of a few-shot block)

    def job(index, family, tail):
        tokens = head + [family] * (10 * BLOCK) + [tail]
        return Job(index, tokens, GenParams(), 8)

    lone, *family = [job(0, 1, 0)] + [job(k, 2, k) for k in range(1, 6)]
    groups = list(prefix_groups([lone, *family]))
    assert [[j.index for j in g] for g in groups] == [[0], [1, 2, 3, 4, 5]]
    # a family keeps together, and a lone prompt after it still goes on its own
    assert [[j.index for j in g] for g in prefix_groups([*family, lone])] == [[1, 2, 3, 4, 5], [0]]
    assert [[j.index for j in g] for g in prefix_groups(family)] == [[1, 2, 3, 4, 5]]
