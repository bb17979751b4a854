"""Pruner: exact budgets in ``decide``, async equals sync, save / load."""

import threading

import pytest
from sparse_policy_ros.sparsity.decisions import Decision, make_executable
from sparse_policy_ros.sparsity.pruner import (
    AsyncPrunerRunner, decide, load_pruner, Pruner, PrunerConfig, save_pruner)
from sparse_policy_ros.sparsity.schedules import static_schedule
import torch

C = int(Decision.COMPUTE)


def random_pruner(n_branches: int = 12, cond_dim: int = 32, seed: int = 0) -> Pruner:
    torch.manual_seed(seed)
    pruner = Pruner(PrunerConfig(n_branches=n_branches, cond_dim=cond_dim))
    with torch.no_grad():
        for param in pruner.parameters():
            param.normal_(0.0, 0.5)  # varied logits, so the decisions have something to show
    return pruner.eval()


def random_logits(k: int, nb: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn((k, batch, nb, 4), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize('target', [0.0, 0.3, 0.5, 0.8, 0.93, 0.95])
def test_decide_with_target_computes_exactly_the_budget(target):
    k, nb = 100, 24
    logits = random_logits(k, nb, batch=2, seed=int(target * 100))
    decisions = decide(logits, target)
    assert decisions.dtype == torch.int8 and decisions.shape == (k, nb)
    assert int((decisions == C).sum()) == round((1 - target) * k * nb)
    assert (decisions[0] == C).all()
    pooled = logits.mean(dim=1)
    margin = pooled[..., 0] - pooled[..., 1:].max(dim=-1).values
    computed = decisions[1:] == C
    if computed.any() and (~computed).any():
        # The computed entries are those with the largest compute margins.
        assert margin[1:][computed].min() >= margin[1:][~computed].max()
    reuse = decisions != C
    best_reuse = pooled[..., 1:].argmax(dim=-1) + 1
    assert torch.equal(decisions[reuse].long(), best_reuse[reuse])


def test_decide_without_target_is_argmax_with_step_zero_computed():
    logits = random_logits(20, 12, seed=3)
    decisions = decide(logits)
    expected = logits[:, 0].argmax(dim=-1).to(torch.int8)
    expected[0] = C
    assert torch.equal(decisions, expected)
    assert set(decisions[1:].unique().tolist()) == {0, 1, 2, 3}


def test_decide_budget_never_below_step_zero_and_rejects_bad_targets():
    decisions = decide(random_logits(10, 6), 0.99)
    assert int((decisions == C).sum()) == 6 and (decisions[0] == C).all()
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match='target_sparsity'):
            decide(random_logits(10, 6), bad)


def test_pruner_output_shape_and_untrained_pruner_prefers_compute():
    pruner = Pruner(PrunerConfig(n_branches=12, cond_dim=32)).eval()
    memory = torch.randn(7, 2, 3, 32)
    with torch.inference_mode():
        logits = pruner(memory)
    assert logits.shape == (7, 2, 12, 4)
    assert (decide(logits) == C).all()


@pytest.mark.parametrize('name', ['fora', 'fixed'])
def test_prior_initialised_pruner_reproduces_the_static_schedule(name, tmp_path):
    k, nb = 30, 12
    schedule = static_schedule(name, k, nb, 0.8)
    pruner = Pruner(PrunerConfig(n_branches=nb, cond_dim=32, n_steps=k))
    pruner.init_prior_from(schedule)
    pruner.eval()
    memory = torch.randn(k, 2, 3, 32)
    with torch.inference_mode():
        logits = pruner(memory)
        assert torch.equal(decide(logits), schedule)
        # With the schedule's own budget the exact-budget path picks the same entries.
        assert torch.equal(decide(logits, 0.8), schedule)
    save_pruner(pruner, tmp_path)
    loaded, _ = load_pruner(tmp_path)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(memory), logits)
    with pytest.raises(ValueError, match='expected n_steps = 30'):
        pruner(torch.randn(10, 1, 3, 32))
    with pytest.raises(ValueError, match='schedule must have shape'):
        pruner.init_prior_from(schedule[:5])
    with pytest.raises(ValueError, match='has no prior'):
        Pruner(PrunerConfig(n_branches=nb, cond_dim=32)).init_prior_from(schedule)
    with pytest.raises(ValueError, match='n_steps'):
        PrunerConfig(n_steps=-1)


@pytest.mark.parametrize('target', [None, 0.5, 0.9])
def test_async_pruner_equals_sync(target):
    pruner = random_pruner()
    runner = AsyncPrunerRunner(pruner, torch.device('cpu'))
    try:
        for seed in range(4):
            memory = torch.randn((20, 1, 3, 32), generator=torch.Generator().manual_seed(seed))
            launched = runner.launch(memory, target)
            synced = runner.run_sync(memory, target)
            async_decisions = launched.result()
            sync_decisions = synced.result()
            assert torch.equal(async_decisions, sync_decisions)
            with torch.inference_mode():
                reference = make_executable(decide(pruner(memory), target))
            assert torch.equal(sync_decisions, reference)
            assert launched.result() is async_decisions  # cached, not recomputed
            assert launched.run_ms > 0.0
            if target is not None:
                assert int((async_decisions == C).sum()) == round((1 - target) * 20 * 12)
            not_ready = runner.launch(memory, target, rollout_available=False).result()
            assert (not_ready == C).all()
    finally:
        runner.close()


def test_runner_thread_setting_does_not_leak_into_later_threads():
    main_threads = torch.get_num_threads()
    runner = AsyncPrunerRunner(random_pruner(), torch.device('cpu'))
    try:
        runner.launch(torch.randn(5, 1, 3, 32), 0.5).result()
        assert runner._executor.submit(torch.get_num_threads).result() == 1
        seen = []
        later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        later.start()
        later.join()
        # A thread started afterwards (say, an inference worker) keeps torch's default.
        assert seen == [main_threads]
        assert torch.get_num_threads() == main_threads
    finally:
        runner.close()


def test_pruner_decisions_depend_on_memory():
    pruner = random_pruner()
    with torch.inference_mode():
        a = decide(pruner(torch.randn(20, 1, 3, 32)), 0.8)
        b = decide(pruner(torch.randn(20, 1, 3, 32)), 0.8)
    assert not torch.equal(a, b)


def test_save_load_pruner_round_trip(tmp_path):
    pruner = random_pruner(seed=5)
    pruner.compute_bias.fill_(0.25)
    save_pruner(pruner, tmp_path, record={'target_sparsity': 0.9})
    loaded, record = load_pruner(tmp_path)
    assert record == {'target_sparsity': 0.9}
    assert loaded.config == pruner.config
    assert not loaded.training
    for key, value in pruner.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    memory = torch.randn(10, 1, 3, 32)
    with torch.inference_mode():
        assert torch.equal(loaded(memory), pruner(memory))


def test_load_pruner_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='pruner.json'):
        load_pruner(tmp_path)
    save_pruner(random_pruner(), tmp_path)
    (tmp_path / 'pruner.safetensors').unlink()
    with pytest.raises(FileNotFoundError, match='pruner.safetensors'):
        load_pruner(tmp_path)
    other = tmp_path / 'other'
    save_pruner(random_pruner(n_branches=6), other)
    save_pruner(random_pruner(n_branches=12), tmp_path)
    (tmp_path / 'pruner.safetensors').write_bytes((other / 'pruner.safetensors').read_bytes())
    with pytest.raises(ValueError, match='does not match'):
        load_pruner(tmp_path)


def test_pruner_config_validation():
    with pytest.raises(ValueError, match='divisible'):
        PrunerConfig(d_model=63, n_head=2)
    with pytest.raises(ValueError, match='n_branches'):
        PrunerConfig(n_branches=0)


@pytest.mark.parametrize('target', [None, 0.9])
def test_restricted_pruner_takes_only_its_decisions(target, tmp_path):
    torch.manual_seed(1)
    pruner = Pruner(PrunerConfig(n_branches=12, cond_dim=32,
                                 decisions=('compute', 'reuse_step')))
    with torch.no_grad():
        for param in pruner.parameters():
            param.normal_(0.0, 0.5)
    pruner.eval()
    memory = torch.randn(20, 1, 5, 32)
    unrestricted = Pruner(PrunerConfig(n_branches=12, cond_dim=32))
    unrestricted.load_state_dict(pruner.state_dict())
    # The same weights choose the other reuse kinds somewhere when nothing is masked...
    free = decide(unrestricted.eval()(memory), target)
    assert bool(((free == int(Decision.REUSE_BLOCK)) | (free == int(Decision.REUSE_ROLLOUT)))
                .any())
    # ...and never when they are.
    restricted = decide(pruner(memory), target)
    assert set(restricted.unique().tolist()) <= {C, int(Decision.REUSE_STEP)}
    save_pruner(pruner, tmp_path)
    loaded, _ = load_pruner(tmp_path)
    assert loaded.config.decisions == ('compute', 'reuse_step')
    assert torch.equal(decide(loaded(memory), target), restricted)
    for bad in (('reuse_step',), ('compute',), ('compute', 'skip')):
        with pytest.raises(ValueError, match='pruner decisions must be names'):
            PrunerConfig(decisions=bad)
