"""Pruner: exact budgets in ``decide``, async equals sync, save / load, static tables."""

import json
from pathlib import Path
import shutil
import threading

from engine_helpers import observation
import numpy as np
import pytest
from safetensors.torch import load_file, save_file
from sparse_policy_ros.policy.checkpoint import load_config, load_policy
from sparse_policy_ros.sparsity.decisions import Decision, from_rows, make_executable, to_rows
from sparse_policy_ros.sparsity.pruner import (
    AsyncPrunerRunner, check_pruner_matches, decide, decision_margins, DECISION_TOLERANCE,
    load_pruner, Pruner, PrunerConfig, save_pruner, STATIC_DECISIONS_KEY)
from sparse_policy_ros.sparsity.schedules import static_schedule, step_schedule
from sparse_policy_ros.sparsity.sparse_policy import SparsePolicy
import torch

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / 'models' / 'default'

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
            # Without earlier calls the reuse-rollout entries become computed, nothing else
            # is computed that the pruner did not choose.
            not_ready = runner.launch(memory, target, rollout_available=False).result()
            with torch.inference_mode():
                cold = make_executable(decide(pruner(memory), target), rollout_available=False)
            assert torch.equal(not_ready, cold)
            assert not (not_ready == Decision.REUSE_ROLLOUT).any()
            rollout = reference == Decision.REUSE_ROLLOUT
            assert (not_ready[rollout] == C).all()
            assert torch.equal(not_ready == C, (reference == C) | rollout)
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


def default_pruner_copy(folder: Path, with_config: bool = True) -> Path:
    """Copy the shipped default pruner (and the policy's config.json) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    names = ['pruner.json', 'pruner.safetensors'] + (['config.json'] if with_config else [])
    for name in names:
        shutil.copy2(DEFAULT_MODEL / name, folder / name)
    return folder


def default_schedule() -> torch.Tensor:
    """Return the searched schedule of the model card: every branch at six steps, 72 entries."""
    record = json.loads((DEFAULT_MODEL / 'pruner.json').read_text())['training']
    assert record['init_steps'] == [0, 17, 39, 62, 82, 97]
    return step_schedule(100, 12, record['init_steps'])


def nudge_one_ulp(folder: Path, name: str, direction: float) -> None:
    """Move every float32 value of tensor ``name`` in pruner.safetensors by one ulp."""
    path = folder / 'pruner.safetensors'
    tensors = load_file(str(path))
    values = tensors[name].numpy()
    assert values.dtype == np.float32
    nudged = np.asarray(np.nextafter(values, np.float32(direction)), np.float32)
    assert (nudged != values).all()
    tensors[name] = torch.from_numpy(nudged)
    save_file(tensors, str(path))


def executed_decisions(pruner: Pruner) -> torch.Tensor:
    """Return the decisions SparsePolicy executes in pruner mode (its runner, argmax path)."""
    runner = AsyncPrunerRunner(pruner, torch.device('cpu'))
    try:
        memory = torch.randn((100, 1, 3, 256), generator=torch.Generator().manual_seed(0))
        return runner.run_sync(memory, None).result()
    finally:
        runner.close()


def test_shipped_default_pruner_executes_its_recorded_table():
    expected = default_schedule()
    data = json.loads((DEFAULT_MODEL / 'pruner.json').read_text())
    assert torch.equal(from_rows(data[STATIC_DECISIONS_KEY]['rows']), expected)
    pruner, _ = load_pruner(DEFAULT_MODEL)
    assert pruner.is_static and torch.equal(pruner.static_table, expected)
    decisions = executed_decisions(pruner)
    assert torch.equal(decisions, expected) and int((decisions == C).sum()) == 72
    # Why the table exists: at the computed steps the argmax is an exact four-way tie.
    margins = decision_margins(pruner.static_logits()[:, None])
    assert float(margins[17].max()) == 0.0 and float(margins[1:].min()) == 0.0


@pytest.mark.parametrize('name', ['compute_bias', 'head.bias', 'step_prior'])
@pytest.mark.parametrize('direction', [np.inf, -np.inf])
def test_one_ulp_of_bias_does_not_change_the_default_pruners_decisions(
        name, direction, tmp_path):
    folder = default_pruner_copy(tmp_path)
    nudge_one_ulp(folder, name, direction)
    pruner, _ = load_pruner(folder)
    assert torch.equal(executed_decisions(pruner), default_schedule())


def test_one_ulp_less_compute_bias_would_have_left_only_step_zero(tmp_path):
    # The hazard the table removes: the nudged weights' own argmax computes step 0 only, yet
    # the policy still executes the 72 recorded entries, on a real predict call.
    folder = default_pruner_copy(tmp_path)
    nudge_one_ulp(folder, 'compute_bias', -np.inf)
    pruner, _ = load_pruner(folder)
    with torch.inference_mode():
        argmax = make_executable(decide(pruner(torch.zeros(100, 1, 3, 256))))
    assert int((argmax == C).sum()) == 12
    policy = SparsePolicy(load_policy(DEFAULT_MODEL), pruner, mode='pruner', device='cpu',
                          warmup=False, cuda_graphs=False)
    try:
        for call in range(2):  # the recorded table has no reuse-rollout: same from call one
            chunk = policy.predict(observation(policy.config, call))
            assert torch.equal(chunk.stats.decisions, default_schedule())
    finally:
        policy.close()


def edit_rows(folder: Path, edit) -> None:
    path = folder / 'pruner.json'
    data = json.loads(path.read_text())
    rows = [row.split() for row in data[STATIC_DECISIONS_KEY]['rows']]
    edit(rows)
    data[STATIC_DECISIONS_KEY]['rows'] = [' '.join(row) for row in rows]
    path.write_text(json.dumps(data))


def test_recorded_table_that_the_weights_contradict_is_refused(tmp_path):
    folder = default_pruner_copy(tmp_path)

    def contradict(rows):
        rows[50][3] = 'compute'  # the weights prefer reuse_step there by 4 logits

    edit_rows(folder, contradict)
    path = str(folder / 'pruner.json')
    with pytest.raises(ValueError) as error:
        load_pruner(folder)
    message = str(error.value)
    assert message.startswith(path)
    assert ('recorded static decision at (step 50, branch 3) is compute, but the weights '
            'choose reuse_step by a logit margin of 4 ') in message


def test_recorded_table_settles_near_ties_only(tmp_path):
    # At step 17 every decision ties: a table may pick any of them, and it is what runs.
    folder = default_pruner_copy(tmp_path)

    def settle(rows):
        rows[17] = ['reuse_step'] * 12

    edit_rows(folder, settle)
    pruner, _ = load_pruner(folder)
    expected = default_schedule()
    expected[17] = int(Decision.REUSE_STEP)
    assert torch.equal(executed_decisions(pruner), expected)
    # A budget of the table's 60 computed entries runs the table too; another runs the logits.
    memory = torch.zeros(100, 1, 3, 256)
    assert torch.equal(pruner.decisions(memory, 0.95), expected)
    assert int((pruner.decisions(memory, 0.9) == C).sum()) == 120


@pytest.mark.parametrize('edit, match', [
    (lambda rows: rows[0].__setitem__(0, 'reuse_step'),
     r'\(step 0, branch 0\) must be compute'),
    (lambda rows: rows[4].__setitem__(2, 'skip'), r'row 4, branch 2: .skip. is not one of'),
    (lambda rows: rows.pop(), r'must have shape \(n_steps, n_branches\) = \(100, 12\)'),
    (lambda rows: rows[9].pop(), 'row 9 has 11 entries, expected 12'),
])
def test_malformed_tables_are_refused_naming_the_file(edit, match, tmp_path):
    folder = default_pruner_copy(tmp_path)
    edit_rows(folder, edit)
    with pytest.raises(ValueError, match=match) as error:
        load_pruner(folder)
    assert str(error.value).startswith(str(folder / 'pruner.json'))


def test_table_for_an_observation_dependent_pruner_is_refused(tmp_path):
    folder = default_pruner_copy(tmp_path)
    tensors = load_file(str(folder / 'pruner.safetensors'))
    tensors['head.weight'] = torch.full_like(tensors['head.weight'], 0.01)
    save_file(tensors, str(folder / 'pruner.safetensors'))
    with pytest.raises(ValueError, match='head is not zero'):
        load_pruner(folder)


def test_save_records_the_table_of_a_static_pruner_only(tmp_path):
    k, nb = 30, 12
    schedule = static_schedule('fora', k, nb, 0.8)
    pruner = Pruner(PrunerConfig(n_branches=nb, cond_dim=32, n_steps=k))
    pruner.init_prior_from(schedule)
    pruner.eval()
    save_pruner(pruner, tmp_path / 'static')
    data = json.loads((tmp_path / 'static' / 'pruner.json').read_text())
    assert data[STATIC_DECISIONS_KEY]['rows'] == to_rows(schedule)
    assert data[STATIC_DECISIONS_KEY]['min_margin'] == pytest.approx(4.0)
    assert pruner.static_table is None  # saving does not change what the pruner runs
    loaded, _ = load_pruner(tmp_path / 'static')
    assert torch.equal(loaded.static_table, schedule)
    memory = torch.randn(k, 1, 3, 32)
    assert torch.equal(loaded.decisions(memory), schedule)
    assert torch.equal(loaded.decisions(memory, 0.8), schedule)  # budget path: the logits
    with pytest.raises(ValueError, match='expected n_steps = 30'):
        loaded.decisions(torch.randn(10, 1, 3, 32))
    with pytest.raises(ValueError, match='expected cond_dim = 32'):
        loaded.decisions(torch.randn(k, 1, 3, 16))
    # A table set by hand is checked like a loaded one, and it is what is saved.
    settled = schedule.clone()
    settled[3, 0] = int(Decision.REUSE_BLOCK)
    with pytest.raises(ValueError, match=r'\(step 3, branch 0\) is reuse_block'):
        loaded.set_static_table(settled)
    save_pruner(random_pruner(), tmp_path / 'dynamic')
    data = json.loads((tmp_path / 'dynamic' / 'pruner.json').read_text())
    assert STATIC_DECISIONS_KEY not in data
    assert load_pruner(tmp_path / 'dynamic')[0].static_table is None


def test_static_pruner_without_a_table_warns_on_near_ties(tmp_path, caplog):
    folder = default_pruner_copy(tmp_path)
    data = json.loads((folder / 'pruner.json').read_text())
    del data[STATIC_DECISIONS_KEY]
    (folder / 'pruner.json').write_text(json.dumps(data))
    with caplog.at_level('WARNING', logger='sparse_policy_ros.sparsity.pruner'):
        pruner, _ = load_pruner(folder)
    assert pruner.static_table is None
    assert f'win by only 0 (< {DECISION_TOLERANCE:g})' in caplog.text
    assert str(folder / 'pruner.json') in caplog.text


def test_pruner_for_another_policy_is_refused_naming_the_field(tmp_path):
    # A 24-branch pruner beside a 12-branch policy used to fail inside the sampler with
    # "list index out of range".
    save_pruner(Pruner(PrunerConfig(n_branches=24, cond_dim=256)), tmp_path)
    shutil.copy2(DEFAULT_MODEL / 'config.json', tmp_path / 'config.json')
    expected = f'{tmp_path / "pruner.json"}: pruner n_branches is 24, expected 12'
    with pytest.raises(ValueError, match='pruner n_branches is 24, expected 12') as error:
        load_pruner(tmp_path)
    assert str(error.value).startswith(expected)
    for name in ('model.safetensors', 'stats.safetensors'):
        (tmp_path / name).symlink_to(DEFAULT_MODEL / name)
    with pytest.raises(ValueError, match='pruner n_branches is 24, expected 12'):
        SparsePolicy.from_pretrained(tmp_path, device='cpu', mode='pruner', warmup=False)
    model = load_config(DEFAULT_MODEL)
    good = PrunerConfig(n_branches=12, cond_dim=256, n_steps=100)
    check_pruner_matches(good, model)
    check_pruner_matches(PrunerConfig(n_branches=12, cond_dim=256), model, 10)  # no prior
    check_pruner_matches(PrunerConfig(n_branches=12, cond_dim=256, n_steps=10), model)  # grid
    for field, value, expected_value, steps in (('cond_dim', 128, 256, None),
                                                ('n_steps', 100, 50, 50),
                                                ('n_steps', 10, 100, 100)):
        config = PrunerConfig(**{**vars(good), field: value})
        with pytest.raises(ValueError,
                           match=f'^where: pruner {field} is {value}, expected '
                                 f'{expected_value} '):
            check_pruner_matches(config, model, steps, source='where')


def test_corrupt_pruner_files_are_errors_naming_the_file(tmp_path):
    folder = default_pruner_copy(tmp_path, with_config=False)
    weights = folder / 'pruner.safetensors'
    good = weights.read_bytes()
    weights.write_bytes(good[:len(good) // 2])
    with pytest.raises(ValueError, match='not a readable safetensors file') as error:
        load_pruner(folder)
    assert str(error.value).startswith(str(weights))
    weights.write_bytes(good)
    config = folder / 'pruner.json'
    text = config.read_text()
    for bad, match in ((text[:len(text) // 2], 'not valid JSON'),
                       ('[1, 2]', 'expected an object with a "pruner" section'),
                       ('{"training": {}}', 'expected an object with a "pruner" section'),
                       ('{"pruner": {"n_branches": 12, "size": 3}}', 'bad "pruner" section'),
                       ('{"pruner": {"n_branches": -1}}', 'bad "pruner" section'),
                       ('{"pruner": {}, "training": 3}', '"training" must be an object')):
        config.write_text(bad)
        with pytest.raises(ValueError, match=match) as error:
            load_pruner(folder)
        assert str(error.value).startswith(str(config)), bad


def test_decide_budget_breaks_ties_by_position():
    # All margins equal: the budget goes to the earliest entries, on every device.
    decisions = decide(torch.zeros(4, 1, 3, 4), 0.5)
    assert (decisions[:2] == C).all() and (decisions[2:] != C).all()


def test_sparse_policy_refuses_a_pruner_trained_for_another_policy():
    model = load_policy(DEFAULT_MODEL)
    with pytest.raises(ValueError, match='pruner n_branches is 24, expected 12'):
        SparsePolicy(model, Pruner(PrunerConfig(n_branches=24, cond_dim=model.config.n_emb)),
                     mode='pruner', device='cpu', warmup=False)


def coarse_pruner_folder(folder: Path, grid: int, computed: list[int],
                         config_steps: int | None = None) -> Path:
    """Write the default model with a static reuse-schedule pruner on its own ``grid``."""
    folder.mkdir(parents=True, exist_ok=True)
    config = json.loads((DEFAULT_MODEL / 'config.json').read_text())
    if config_steps is not None:
        config['policy']['num_inference_steps'] = config_steps
    (folder / 'config.json').write_text(json.dumps(config))
    for name in ('model.safetensors', 'stats.safetensors'):
        (folder / name).symlink_to(DEFAULT_MODEL / name)
    pruner = Pruner(PrunerConfig(n_branches=12, cond_dim=256, n_steps=grid))
    pruner.init_prior_from(step_schedule(grid, 12, computed))
    save_pruner(pruner.eval(), folder)
    return folder


def test_pruner_on_its_own_coarser_grid_samples_that_grid(tmp_path):
    # A 10-step pruner beside the 100-step model: pruner calls run its 10 steps, the same
    # actions as a model folder whose config says 10 steps, and the budget is in step
    # equivalents of the model's 100 (0.98: 2 computed).
    coarse = coarse_pruner_folder(tmp_path / 'coarse', 10, [0, 7])
    ten = coarse_pruner_folder(tmp_path / 'ten', 10, [0, 7], config_steps=10)
    obs = observation(load_config(DEFAULT_MODEL))
    chunks = []
    for folder, target in ((coarse, 0.98), (ten, 0.8), (coarse, None)):
        policy = SparsePolicy.from_pretrained(folder, device='cpu', mode='pruner',
                                              target_sparsity=target, warmup=False)
        assert policy.scheduler.num_inference_steps == 10
        chunk = policy.predict(obs, generator=torch.Generator().manual_seed(3))
        assert chunk.stats.decisions.shape == (10, 12)
        assert int((chunk.stats.decisions == C).sum()) == 24
        chunks.append(chunk)
        policy.close()
    assert np.array_equal(chunks[0].actions, chunks[1].actions)
    assert np.array_equal(chunks[0].actions, chunks[2].actions)
    assert chunks[0].stats.sparsity == pytest.approx(0.98)  # against the dense 100 steps
    assert chunks[1].stats.sparsity == pytest.approx(0.8)  # that folder's dense is 10 steps
    dense = SparsePolicy.from_pretrained(coarse, device='cpu', mode='dense', warmup=False)
    assert dense.scheduler.num_inference_steps == 100  # the dense sampler is untouched
    dense.close()
    # An explicit number of steps must be the pruner's grid.
    with pytest.raises(ValueError, match='pruner n_steps is 10, expected 100'):
        SparsePolicy.from_pretrained(coarse, device='cpu', mode='pruner',
                                     num_inference_steps=100, warmup=False)
    # A budget the grid cannot hold is refused with the numbers.
    with pytest.raises(ValueError, match=r'target_sparsity 0.5 of 100 dense steps computes 50 '
                                         r'step-equivalents.*10-step grid.*at least 0.9'):
        SparsePolicy.from_pretrained(coarse, device='cpu', mode='pruner',
                                     target_sparsity=0.5, warmup=False)


def test_pruner_grid_beyond_the_training_timesteps_is_refused(tmp_path):
    save_pruner(Pruner(PrunerConfig(n_branches=12, cond_dim=256, n_steps=200)), tmp_path)
    shutil.copy2(DEFAULT_MODEL / 'config.json', tmp_path / 'config.json')
    with pytest.raises(ValueError, match='pruner n_steps is 200, expected at most 100'):
        load_pruner(tmp_path)


def test_a_static_pruner_executes_its_table_without_running_the_network():
    # The recorded table is what the pruner returns; the policy takes it as it is (no worker
    # thread hop, no per-call conversion) and, reading nothing across calls, keeps no cache.
    model = load_policy(DEFAULT_MODEL)
    pruner, _ = load_pruner(DEFAULT_MODEL)
    policy = SparsePolicy(model, pruner, mode='pruner', target_sparsity=0.94, warmup=False)
    assert not policy.reads_rollout_cache
    obs = observation(model.config, 0)
    first = policy.predict(obs, generator=torch.Generator().manual_seed(3))
    assert first.stats.pruner_run_ms == 0.0 and first.stats.pruner_ms == 0.0
    assert torch.equal(first.stats.decisions, make_executable(default_schedule()))
    assert first.stats.cache_bytes == 0 and policy.cache_bytes == 0
    # The reported decisions are the caller's copy: changing them changes no later call.
    with torch.inference_mode():  # where the tensor was made, so a caller could write it
        first.stats.decisions.fill_(C)
    second = policy.predict(obs, generator=torch.Generator().manual_seed(3))
    assert torch.equal(second.stats.decisions, make_executable(default_schedule()))
    np.testing.assert_array_equal(second.actions, first.actions)
    # The same decisions through the static-schedule path give the same actions, bit for bit.
    fixed = SparsePolicy(model, None, mode='fixed', target_sparsity=0.94, warmup=False)
    fixed._static = default_schedule()
    again = fixed.predict(obs, generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(again.actions, first.actions)
    # A schedule edited in place is executed as edited, not as it was first made executable.
    fixed._static[1:] = int(Decision.REUSE_STEP)
    edited = fixed.predict(obs, generator=torch.Generator().manual_seed(3))
    assert int((edited.stats.decisions == C).sum()) == model.config.n_branches
    # Another budget than the table's is decided by the network on its worker.
    other = SparsePolicy(model, pruner, mode='pruner', target_sparsity=0.9, warmup=False)
    assert other.reads_rollout_cache
    assert other.predict(obs).stats.pruner_run_ms > 0.0
