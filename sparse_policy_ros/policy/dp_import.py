"""
Import a real-stanford/diffusion_policy checkpoint (``.ckpt``) into a model folder.

A Diffusion Policy (DP) checkpoint is a zip-format ``torch.save`` of::

    {'cfg': <OmegaConf DictConfig, pickled by dill>,
     'state_dicts': {'model': {...}, 'ema_model': {...}, 'optimizer': {...}},
     'pickles': {'_output_dir': <dill bytes>, ...}}

Nothing in it is executed: :class:`RestrictedUnpickler` materializes tensors, storages,
``OrderedDict`` and builtin containers only. Any other global (DP's DictConfig, or a crafted
``os.system``) becomes an inert placeholder that records its name; a placeholder is tolerated
under ``cfg`` alone (the config then comes from ``--config-yaml``, DP's ``.hydra/config.yaml``,
or from the weights' shapes) and refused by name anywhere else.

Supported: ``DiffusionTransformerLowdimPolicy`` and ``DiffusionTransformerHybridImagePolicy``
with ``obs_as_cond``, causal attention and the MLP condition encoder (``n_cond_layers: 0``),
DDPM or DDIM (epsilon prediction). DP's ``TransformerForDiffusion`` maps onto
:class:`DiffusionTransformer` key by key; the policy gets ``state_encoder='identity'`` (DP feeds
the normalized low-dim state to the condition tokens) and ``ddim_eps='raw'`` (diffusers' DDIM
step). A low-dim policy has no cameras. An image policy's robomimic encoder (GroupNorm
ResNet-18, spatial softmax, linear, ReLU per rgb key) becomes our 'resnet18_gn' camera encoders
(:mod:`.dp_image` maps it); its ``shape_meta`` (the obs keys, their types, shapes and order)
must come from the checkpoint cfg or ``--config-yaml``.
"""

import argparse
import builtins
import collections
from dataclasses import dataclass
import logging
from pathlib import Path
import pickle
import re
import sys
from typing import Any
import zipfile

import torch

from . import dp_image
from .checkpoint import CONFIG_FILE, load_state_strict, save_policy
from .config import PolicyConfig
from .dp_image import CheckpointError, HYBRID_POLICY, ImageLayout, MISSING as _MISSING
from .model import ACTION, DiffusionPolicy
from .normalizer import MinMaxNormalizer
from .observation import OBS_STATE

logger = logging.getLogger(__name__)

# DP's LinearNormalizer field -> ours.
NORMALIZER_FIELDS = {'obs': OBS_STATE, 'action': ACTION}
DP_PREFIX = 'model.'
LOWDIM_POLICY = 'DiffusionTransformerLowdimPolicy'
# Keys DP modules carry that hold no weights (ModuleAttrMixin's device probe, fixed masks).
IGNORED_KEYS = ('_dummy_variable', 'mask_generator._dummy_variable', 'model._dummy_variable',
                'model.mask', 'model.memory_mask')
STORAGE_DTYPES = {
    'FloatStorage': torch.float32, 'DoubleStorage': torch.float64,
    'HalfStorage': torch.float16, 'BFloat16Storage': torch.bfloat16,
    'LongStorage': torch.int64, 'IntStorage': torch.int32, 'ShortStorage': torch.int16,
    'CharStorage': torch.int8, 'ByteStorage': torch.uint8, 'BoolStorage': torch.bool,
    'ComplexFloatStorage': torch.complex64, 'ComplexDoubleStorage': torch.complex128,
    'UntypedStorage': torch.uint8,
}
SAFE_BUILTINS = ('dict', 'list', 'tuple', 'set', 'frozenset', 'bytearray', 'complex', 'int',
                 'float', 'bool', 'str', 'bytes', 'slice')


class _StorageType:
    """What ``torch.FloatStorage`` & co. unpickle to: only a dtype for ``persistent_load``."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]


class RefusedObject:
    """Inert stand-in for an instance of a refused global; swallows every pickle operation."""

    qualname = '?'

    def __new__(cls, *args, **kwargs):
        return super().__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs) -> 'RefusedObject':
        return self

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        """Ignore a list item (APPENDS)."""

    def extend(self, values: Any) -> None:
        """Ignore list items (APPENDS)."""

    def __repr__(self) -> str:
        return f'<refused {self.qualname}>'


def _refused_class(qualname: str) -> type:
    # A real class, since NEWOBJ insists on one; calling it builds an inert RefusedObject.
    return type('Refused', (RefusedObject,), {'qualname': qualname})


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                    metadata=None) -> torch.Tensor:
    if not isinstance(storage, torch.storage.TypedStorage):
        raise pickle.UnpicklingError(f'tensor rebuilt from a {type(storage).__name__}, '
                                     f'expected a storage record of the archive')
    if backward_hooks:
        raise pickle.UnpicklingError('tensor carries backward hooks; refusing to attach them')
    try:
        return torch._utils._rebuild_tensor_v2(storage, storage_offset, tuple(size),
                                               tuple(stride), bool(requires_grad), {})
    except RuntimeError as error:
        raise pickle.UnpicklingError(f'tensor of size {tuple(size)} does not fit its storage '
                                     f'({error})') from error


def _rebuild_parameter(data, requires_grad, backward_hooks) -> torch.Tensor:
    if not isinstance(data, torch.Tensor) or backward_hooks:
        raise pickle.UnpicklingError('parameter without tensor data, or with backward hooks')
    return data


def _encode(text: str, encoding: str = 'utf-8') -> bytes:
    # What protocol 2 writes for a bytes object: _codecs.encode(latin-1 text, 'latin1').
    if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
        raise pickle.UnpicklingError(f'_codecs.encode with {encoding!r}, expected latin1')
    return text.encode(encoding)


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('_codecs', 'encode'): _encode,
    **{('torch', name): _StorageType(name) for name in STORAGE_DTYPES},
    **{('builtins', name): getattr(builtins, name) for name in SAFE_BUILTINS},
}
# Python 2 module names that protocol-2 pickles (torch.save's default) still write.
MODULE_ALIASES = {'__builtin__': 'builtins', 'copy_reg': 'copyreg'}


def allowed_names() -> list[str]:
    """Return the globals a checkpoint may reference, as 'module.name'."""
    return sorted(f'{module}.{name}' for module, name in ALLOWED_GLOBALS)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickle torch's ``data.pkl`` materializing only allow-listed globals."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self.archive = archive
        self.prefix = prefix
        self.storages: dict[str, torch.storage.TypedStorage] = {}
        self.refused: list[str] = []

    def find_class(self, module: str, name: str) -> Any:
        """Return the allowed object for ``module.name`` or an inert placeholder class."""
        module = MODULE_ALIASES.get(module, module)
        allowed = ALLOWED_GLOBALS.get((module, name))
        if allowed is not None:
            return allowed
        qualname = f'{module}.{name}'
        self.refused.append(qualname)
        return _refused_class(qualname)

    def persistent_load(self, pid: Any) -> torch.storage.TypedStorage:
        """Resolve ``('storage', type, key, location, numel)`` to a CPU storage of the archive."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == 'storage'):
            raise pickle.UnpicklingError(f'unknown persistent id {pid!r}')
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str):
            raise pickle.UnpicklingError(f'storage record {pid!r} has no known storage type')
        if key in self.storages:
            return self.storages[key]
        record = f'{self.prefix}/data/{key}'
        try:
            data = self.archive.read(record)
        except KeyError:
            raise pickle.UnpicklingError(f'storage record {record} is missing') from None
        itemsize = torch.empty((), dtype=storage_type.dtype).element_size()
        if storage_type.name != 'UntypedStorage' and len(data) != numel * itemsize:
            raise pickle.UnpicklingError(
                f'storage record {record} has {len(data)} bytes, expected {numel} x {itemsize}')
        untyped = torch.UntypedStorage.from_buffer(data, dtype=torch.uint8) if data else \
            torch.UntypedStorage(0)
        storage = torch.storage.TypedStorage(wrap_storage=untyped, dtype=storage_type.dtype,
                                             _internal=True)
        self.storages[key] = storage
        return storage


def read_torch_checkpoint(path: str | Path) -> tuple[Any, list[str]]:
    """Unpickle a zip-format ``torch.save`` file safely; returns (payload, refused names)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint {path} does not exist')
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise CheckpointError(
            f'{path}: expected a zip-format torch checkpoint (torch >= 1.6), could not open it '
            f'({error}); it is {path.stat().st_size} bytes: truncated, or a legacy/foreign '
            f'file') from error
    with archive:
        pickles = [n for n in archive.namelist() if n.count('/') == 1 and n.endswith('/data.pkl')]
        if len(pickles) != 1:
            raise CheckpointError(f'{path}: expected one <archive>/data.pkl record, got '
                                  f'{pickles or "none"} (not a torch checkpoint?)')
        prefix = pickles[0].split('/')[0]
        byteorder = f'{prefix}/byteorder'
        if byteorder in archive.namelist() and archive.read(byteorder) != b'little':
            raise CheckpointError(f'{path}: big-endian checkpoints are not supported')
        try:
            with archive.open(pickles[0]) as handle:
                unpickler = RestrictedUnpickler(handle, archive, prefix)
                payload = unpickler.load()
        except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, OSError, TypeError,
                AttributeError, ValueError, IndexError, KeyError) as error:
            refused = getattr(locals().get('unpickler'), 'refused', [])
            hint = (f' (refused globals: {sorted(set(refused))}; allowed: {allowed_names()})'
                    if refused else '')
            raise CheckpointError(f'{path}: could not unpickle {pickles[0]}: '
                                  f'{type(error).__name__}: {error}{hint}') from error
    return payload, unpickler.refused


def find_refused(obj: Any, where: str = 'payload') -> tuple[str, str] | None:
    """Return (location, qualname) of the first refused placeholder in ``obj``, or None."""
    if isinstance(obj, RefusedObject):
        return where, obj.qualname
    if isinstance(obj, type) and issubclass(obj, RefusedObject):
        return where, obj.qualname
    if isinstance(obj, dict):
        for key, value in obj.items():
            found = find_refused(key, f'{where} key') or find_refused(value, f'{where}[{key!r}]')
            if found:
                return found
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for index, value in enumerate(obj):
            found = find_refused(value, f'{where}[{index}]')
            if found:
                return found
    return None


@dataclass
class DPCheckpoint:
    """The parts of a DP checkpoint the importer uses."""

    path: Path
    cfg: dict | None  # the training config as plain data, when it was stored as plain data
    cfg_refused: str | None  # qualname of the refused cfg object (e.g. DictConfig), if any
    state_dicts: dict[str, dict]


def load_dp_checkpoint(path: str | Path) -> DPCheckpoint:
    """Read a DP checkpoint without executing anything it references."""
    path = Path(path)
    payload, _ = read_torch_checkpoint(path)
    found = find_refused(payload if not isinstance(payload, dict) else
                         {k: v for k, v in payload.items() if k != 'cfg'})
    if found:
        raise CheckpointError(f'{path}: refused global {found[1]!r} at {found[0]} (allowed: '
                              f'{", ".join(allowed_names())})')
    if not isinstance(payload, dict) or 'state_dicts' not in payload:
        keys = sorted(map(str, payload)) if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f'{path}: expected a Diffusion Policy checkpoint, a dict with '
                              f"'state_dicts' (and 'cfg', 'pickles'), got {keys}")
    state_dicts = payload['state_dicts']
    if not isinstance(state_dicts, dict) or not all(
            isinstance(v, dict) for v in state_dicts.values()):
        raise CheckpointError(f"{path}: 'state_dicts' must map names to state dicts, got "
                              f'{type(state_dicts).__name__}')
    cfg = payload.get('cfg')
    refused = find_refused(cfg)
    if refused:
        logger.warning('%s: cfg is a pickled %s, which is not materialized (not executed); the '
                       'config comes from --config-yaml or from the weights', path, refused[1])
        return DPCheckpoint(path, None, refused[1], state_dicts)
    if cfg is not None and not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: 'cfg' must be a mapping, got {type(cfg).__name__}")
    return DPCheckpoint(path, cfg, None, state_dicts)


_REF = re.compile(r'\$\{([A-Za-z0-9_.]+)\}')


def resolve_interpolations(node: Any, root: dict | None = None, depth: int = 0) -> Any:
    """
    Resolve OmegaConf ``${a.b}`` references of a plain config; leave others as text.

    Resolvers such as ``${eval:...}`` are not evaluated: a field that needs one stays a
    string, and the importer falls back to the weights' shapes or says which field is missing.
    """
    root = node if root is None else root
    if depth > 20:
        return node
    if isinstance(node, dict):
        return {k: resolve_interpolations(v, root, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve_interpolations(v, root, depth + 1) for v in node]
    if not isinstance(node, str):
        return node
    whole = _REF.fullmatch(node)
    if whole:
        value = _lookup(root, whole.group(1))
        return node if value is _MISSING else resolve_interpolations(value, root, depth + 1)

    def substitute(match: re.Match) -> str:
        value = _lookup(root, match.group(1))
        return match.group(0) if value is _MISSING or isinstance(value, (dict, list)) \
            else str(resolve_interpolations(value, root, depth + 1))
    return _REF.sub(substitute, node)


def _lookup(root: dict, dotted: str) -> Any:
    node: Any = root
    for part in dotted.split('.'):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def read_config_yaml(path: str | Path) -> dict:
    """Load DP's ``.hydra/config.yaml`` as plain data with ``${...}`` references resolved."""
    import yaml  # only the importer needs it
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'config file {path} does not exist')
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise CheckpointError(f'{path}: expected a YAML config, could not parse it '
                              f'({error})') from error
    if not isinstance(data, dict):
        raise CheckpointError(f'{path}: expected a YAML mapping, got {type(data).__name__}')
    return resolve_interpolations(data)


def select_weights(ckpt: DPCheckpoint, weights: str) -> tuple[dict[str, torch.Tensor], str]:
    """Pick the EMA (default) or raw policy state dict: returns (state dict, its name)."""
    if weights not in ('ema', 'raw'):
        raise ValueError(f"weights must be one of ['ema', 'raw'], got {weights!r}")
    dicts = ckpt.state_dicts
    name = 'ema_model' if weights == 'ema' else 'model'
    if name not in dicts and weights == 'ema' and 'model' in dicts:
        logger.warning("%s: no 'ema_model' state dict (trained without EMA?); importing the "
                       "raw 'model' weights", ckpt.path)
        name = 'model'
    if name not in dicts:
        raise CheckpointError(f'{ckpt.path}: state_dicts has no {name!r}; has '
                              f'{sorted(dicts)}')
    state = dicts[name]
    bad = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise CheckpointError(f'{ckpt.path}: state_dicts[{name!r}] holds non-tensors at '
                              f'{bad[:5]}')
    return state, name


def _shape(state: dict[str, torch.Tensor], key: str, ckpt: Path) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f'{ckpt}: the policy weights lack {key!r}, which every '
                              f'{LOWDIM_POLICY} has (a different model?)')
    return tuple(state[key].shape)


def check_supported(state: dict[str, torch.Tensor], ckpt: Path) -> None:
    """Refuse DP variants without a counterpart here (BatchNorm encoders too), naming keys."""
    dp_image.refuse_batchnorm(state, ckpt)
    encoder_layers = sorted(k for k in state if k.startswith('model.encoder.layers.'))
    if encoder_layers:
        raise CheckpointError(f'{ckpt}: a transformer condition encoder (n_cond_layers > 0) is '
                              f'not supported, keys {encoder_layers[:3]} ...')
    if 'model.cond_obs_emb.weight' not in state:
        raise CheckpointError(f'{ckpt}: no model.cond_obs_emb: obs_as_cond=False (inpainting) '
                              f'policies are not supported')
    if 'model.mask' not in state:
        raise CheckpointError(f'{ckpt}: no model.mask: only causal_attn=True policies map onto '
                              f'this transformer')


def _cfg_get(cfg: dict | None, dotted: str) -> Any:
    if cfg is None:
        return _MISSING
    value = _lookup(cfg, dotted)
    if isinstance(value, str) and '${' in value:
        return _MISSING  # an unevaluated resolver, e.g. ${eval:...}
    return value


def _policy_prefix(cfg: dict | None) -> str:
    return 'policy.' if _cfg_get(cfg, 'policy') is not _MISSING else ''


def read_layout(state: dict[str, torch.Tensor], cfg: dict | None, source: str,
                ckpt: Path) -> ImageLayout | None:
    """Return the obs layout of an image policy from its shape_meta (None for low-dim)."""
    if not dp_image.is_image_policy(state):
        return None
    prefix = _policy_prefix(cfg)
    target = _cfg_get(cfg, f'{prefix}_target_')
    if isinstance(target, str) and not target.endswith(HYBRID_POLICY):
        image = sorted(k for k in state if k.startswith(dp_image.ENCODER))
        raise CheckpointError(f'{ckpt}: {source} names policy {target!r}, but the weights hold '
                              f'an image encoder ({len(image)} keys: {image[:3]} ...); only '
                              f'{HYBRID_POLICY} imports with one')
    for key in (f'{prefix}shape_meta', 'shape_meta', 'task.shape_meta'):
        shape_meta = _cfg_get(cfg, key)
        if shape_meta is not _MISSING:
            return dp_image.parse_shape_meta(shape_meta, f'{source}: {key}', ckpt)
    where = f'{source} has no {prefix}shape_meta' if cfg is not None else \
        f'no config gives it ({source})'
    raise CheckpointError(
        f'{ckpt}: an image policy ({HYBRID_POLICY}) needs shape_meta (its obs keys with type '
        f'and shape, in the obs encoder order), which the weights cannot tell, and {where}; pass '
        f'--config-yaml (the .hydra/config.yaml of the run folder)')


def _image_values(state: dict[str, torch.Tensor], cfg: dict | None, layout: ImageLayout,
                  source: str, ckpt: Path) -> dict[str, Any]:
    """Return the PolicyConfig fields of the camera encoders of an image policy."""
    prefix = _policy_prefix(cfg)
    where = f'{source}: {prefix}'
    feature_dim = dp_image.check_encoder_keys(state, layout, f'{source}: shape_meta', ckpt)
    group_norm = _cfg_get(cfg, prefix + 'obs_encoder_group_norm')
    if group_norm is not _MISSING and group_norm is not True:
        raise CheckpointError(f'{ckpt}: {where}obs_encoder_group_norm is {group_norm!r}; only '
                              f'GroupNorm encoders (true) map onto resnet18_gn')
    crop = _cfg_get(cfg, prefix + 'crop_shape')
    if crop is _MISSING:
        crop = [76, 76]
        logger.warning('%s: %s has no %scrop_shape; assuming %r (the Diffusion Policy default)',
                       ckpt, source, prefix, crop)
    crop = dp_image.read_crop(crop, layout, where, ckpt)
    fixed = _cfg_get(cfg, prefix + 'eval_fixed_crop')
    if crop is not None and fixed is not True:
        logger.warning('%s: %seval_fixed_crop is %s: DP crops at random at eval too; the '
                       'imported policy takes the center crop', ckpt, prefix,
                       'not set' if fixed is _MISSING else repr(fixed))
    return {'camera_names': layout.cameras, 'image_shape': layout.image_shape,
            'crop_shape': crop, 'encoder': 'resnet18_gn', 'image_feature_dim': feature_dim,
            'image_feature_relu': True, 'state_dim': layout.state_dim}


def build_config(state: dict[str, torch.Tensor], cfg: dict | None, source: str, ckpt: Path,
                 overrides: dict[str, Any] | None = None,
                 layout: ImageLayout | None = None) -> PolicyConfig:
    """
    Build the PolicyConfig: shapes from the weights, the rest from ``cfg`` or ``overrides``.

    ``source`` says where ``cfg`` came from, for messages ('the checkpoint cfg',
    '--config-yaml x', or 'nothing'); ``layout`` is an image policy's shape_meta.
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    _, horizon, n_emb = _shape(state, 'model.pos_emb', ckpt)
    _, memory_len, _ = _shape(state, 'model.cond_pos_emb', ckpt)
    _, state_dim = _shape(state, 'model.cond_obs_emb.weight', ckpt)
    _, action_dim = _shape(state, 'model.input_emb.weight', ckpt)
    layers = {int(m.group(1)) for k in state
              if (m := re.match(r'model\.decoder\.layers\.(\d+)\.', k))}
    if not layers or sorted(layers) != list(range(len(layers))):
        raise CheckpointError(f'{ckpt}: expected decoder layers 0..n-1 under '
                              f'model.decoder.layers, got {sorted(layers)}')
    mlp_width = _shape(state, 'model.decoder.layers.0.linear1.weight', ckpt)[0]
    inferred = {'horizon': horizon, 'n_emb': n_emb, 'n_obs_steps': memory_len - 1,
                'state_dim': state_dim, 'action_dim': action_dim, 'n_layer': len(layers),
                'mlp_ratio': mlp_width // n_emb}
    prefix = _policy_prefix(cfg)
    target = _cfg_get(cfg, f'{prefix}_target_')
    expected_policy = HYBRID_POLICY if layout is not None else LOWDIM_POLICY
    if isinstance(target, str) and not target.endswith(expected_policy):
        kind = 'an image encoder (obs_encoder.*)' if layout is not None else 'no image encoder'
        raise CheckpointError(f'{ckpt}: {source} names policy {target!r}; weights with {kind} '
                              f'import as {expected_policy} only')
    image = {} if layout is None else _image_values(state, cfg, layout, source, ckpt)
    if layout is not None:
        features = len(layout.cameras) * image['image_feature_dim'] + layout.state_dim
        if features != state_dim:
            raise CheckpointError(
                f'{ckpt}: model.cond_obs_emb.weight takes {state_dim} features, but shape_meta '
                f'gives {features} ({len(layout.cameras)} cameras x '
                f'{image["image_feature_dim"]} + low-dim {dict(layout.lowdim)})')
        if layout.action_dim not in (None, action_dim):
            raise CheckpointError(f'{ckpt}: shape_meta.action.shape is [{layout.action_dim}] but '
                                  f'the weights have action_dim={action_dim}')
        inferred['state_dim'] = layout.state_dim
    for key, expected in (('obs_as_cond', True), ('pred_action_steps_only', False),
                          ('model.causal_attn', True), ('model.time_as_cond', True),
                          ('model.n_cond_layers', 0)):
        value = _cfg_get(cfg, prefix + key)
        if value is not _MISSING and value != expected:
            raise CheckpointError(f'{ckpt}: {source} has {prefix}{key}={value!r}; only '
                                  f'{expected!r} is supported')
    for name, key in (('horizon', 'horizon'), ('n_obs_steps', 'n_obs_steps'),
                      ('n_layer', 'model.n_layer'), ('n_emb', 'model.n_emb'),
                      ('action_dim', 'action_dim'), ('state_dim', 'obs_dim')):
        if layout is not None and key in ('action_dim', 'obs_dim'):
            continue  # an image policy has them in shape_meta only
        value = _cfg_get(cfg, prefix + key)
        if value is not _MISSING and value != inferred[name]:
            raise CheckpointError(f'{ckpt}: {source} says {prefix}{key}={value!r} but the '
                                  f'weights have {name}={inferred[name]}')

    def needed(name: str, key: str, default: Any = _MISSING) -> Any:
        if name in overrides:
            return overrides[name]
        value = _cfg_get(cfg, prefix + key)
        if value is not _MISSING and value is not None:
            return value
        where = f'{source} has no {prefix}{key}' if cfg is not None else \
            f'no config gives it ({source})'
        if default is _MISSING:
            raise CheckpointError(
                f'{ckpt}: {name} cannot be inferred from the weights and {where}; pass '
                f'--config-yaml (the .hydra/config.yaml of the run folder) or '
                f'--{name.replace("_", "-")}')
        logger.warning('%s: %s: %s; assuming %r (the Diffusion Policy default)', ckpt, name,
                       where, default)
        return default

    sched = 'noise_scheduler.'
    sched_target = needed('scheduler', sched + '_target_', 'DDPMScheduler')
    kind = {'DDPMScheduler': 'ddpm', 'DDIMScheduler': 'ddim', 'ddpm': 'ddpm',
            'ddim': 'ddim'}.get(str(sched_target).rsplit('.', 1)[-1])
    if kind is None:
        raise CheckpointError(f'{ckpt}: scheduler {sched_target!r} is not supported; '
                              f'expected DDPMScheduler or DDIMScheduler')
    num_train = needed('num_train_timesteps', sched + 'num_train_timesteps', 100)
    for key, allowed in (('prediction_type', ('epsilon',)),
                         ('variance_type', ('fixed_small',) if kind == 'ddpm' else None),
                         ('set_alpha_to_one', (True,) if kind == 'ddim' else None),
                         ('steps_offset', (0,) if kind == 'ddim' else None)):
        value = _cfg_get(cfg, prefix + sched + key)
        if allowed and value is not _MISSING and value not in allowed:
            raise CheckpointError(f'{ckpt}: {source} has {prefix}{sched}{key}={value!r}; '
                                  f'supported: {list(allowed)}')
    beta_schedule = needed('beta_schedule', sched + 'beta_schedule', 'squaredcos_cap_v2')
    if beta_schedule == 'linear':
        ends = (_cfg_get(cfg, prefix + sched + 'beta_start'),
                _cfg_get(cfg, prefix + sched + 'beta_end'))
        if any(v is not _MISSING and abs(v - ref) > 1e-12 for v, ref in zip(ends, (1e-4, 0.02))):
            raise CheckpointError(f'{ckpt}: linear betas {ends} are not supported; only '
                                  f'1e-4 .. 0.02')
    steps = needed('num_inference_steps', 'num_inference_steps', num_train)
    values = {
        **inferred,
        'camera_names': (), 'state_encoder': 'identity', 'ddim_eps': 'raw', **image,
        'n_head': needed('n_head', 'model.n_head'),
        'n_action_steps': needed('n_action_steps', 'n_action_steps'),
        'p_drop_emb': needed('p_drop_emb', 'model.p_drop_emb', 0.0),
        'p_drop_attn': needed('p_drop_attn', 'model.p_drop_attn', 0.3),
        'num_train_timesteps': num_train, 'num_inference_steps': steps,
        'scheduler': kind, 'beta_schedule': beta_schedule,
        'clip_sample': needed('clip_sample', sched + 'clip_sample', True),
        'control_hz': overrides.get('control_hz', 10.0),
        'extra': {'imported_from': 'real-stanford/diffusion_policy',
                  'task': str(_cfg_get(cfg, 'task_name') if _cfg_get(cfg, 'task_name')
                              is not _MISSING else 'unknown')},
    }
    if inferred['mlp_ratio'] * n_emb != mlp_width:
        raise CheckpointError(f'{ckpt}: MLP width {mlp_width} is not a multiple of n_emb '
                              f'{n_emb}')
    try:
        return PolicyConfig(**values)
    except ValueError as error:
        raise CheckpointError(f'{ckpt}: the imported config is invalid: {error}') from error


def map_transformer_keys(n_layer: int) -> list[tuple[str, str, slice | None]]:
    """(our key, DP key, row slice) for every transformer tensor; slices split in_proj."""
    pairs = [(f'transformer.{name}', f'model.{name}', None)
             for name in ('input_emb.weight', 'input_emb.bias', 'pos_emb', 'cond_obs_emb.weight',
                          'cond_obs_emb.bias', 'cond_pos_emb', 'ln_f.weight', 'ln_f.bias',
                          'head.weight', 'head.bias')]
    for i in (0, 2):  # Linear, Mish, Linear
        for p in ('weight', 'bias'):
            pairs.append((f'transformer.cond_encoder.{i}.{p}', f'model.encoder.{i}.{p}', None))
    for layer in range(n_layer):
        dp = f'model.decoder.layers.{layer}.'
        ours = [f'transformer.branches.{3 * layer + kind}.' for kind in range(3)]
        for branch, attn, norm in ((ours[0], 'self_attn', 'norm1'),
                                   (ours[1], 'multihead_attn', 'norm2')):
            for p in ('weight', 'bias'):
                # in_proj rows are [q; k; v]; our kv projection is [k; v].
                pairs.append((f'{branch}attn.q.{p}', f'{dp}{attn}.in_proj_{p}', slice(0, 1)))
                pairs.append((f'{branch}attn.kv.{p}', f'{dp}{attn}.in_proj_{p}', slice(1, 3)))
                pairs.append((f'{branch}attn.out.{p}', f'{dp}{attn}.out_proj.{p}', None))
                pairs.append((f'{branch}norm.{p}', f'{dp}{norm}.{p}', None))
        for p in ('weight', 'bias'):
            pairs += [(f'{ours[2]}norm.{p}', f'{dp}norm3.{p}', None),
                      (f'{ours[2]}fc1.{p}', f'{dp}linear1.{p}', None),
                      (f'{ours[2]}fc2.{p}', f'{dp}linear2.{p}', None)]
    return pairs


def convert_weights(state: dict[str, torch.Tensor], model: DiffusionPolicy, ckpt: Path,
                    layout: ImageLayout | None = None) -> dict[str, torch.Tensor]:
    """DP policy state dict -> our state dict (normalizer buffers from ``model``)."""
    own = model.state_dict()
    out = {k: v for k, v in own.items() if k.startswith('normalizer.')}
    used = set(IGNORED_KEYS) | {k for k in state if k.startswith('normalizer.')}
    columns = None
    if layout is not None:
        config = model.config
        crop = config.crop_shape or config.image_shape[1:]
        out.update(dp_image.convert_encoder(state, own, config.camera_names,
                                            dp_image.feature_hw(crop), used, ckpt))
        columns = dp_image.cond_columns(layout, config.image_feature_dim)
    for ours, dp, rows in map_transformer_keys(model.config.n_layer):
        if dp not in state:
            raise CheckpointError(f'{ckpt}: the policy weights lack {dp!r} (for {ours})')
        tensor = state[dp].float()
        if rows is not None:
            third = tensor.shape[0] // 3
            if tensor.shape[0] != 3 * third:
                raise CheckpointError(f'{ckpt}: {dp} has shape {tuple(tensor.shape)}, expected '
                                      f'3 * n_emb rows ({3 * model.config.n_emb})')
            tensor = tensor[rows.start * third:rows.stop * third]
        if columns is not None and dp == 'model.cond_obs_emb.weight' and \
                tensor.shape[-1] == len(columns):
            tensor = tensor[:, columns]  # DP's key order -> cameras first, then the state
        if tuple(tensor.shape) != tuple(own[ours].shape):
            raise CheckpointError(
                f'{ckpt}: shape mismatch: {dp} gives {tuple(tensor.shape)} for {ours}, which '
                f'has shape {tuple(own[ours].shape)} in the model built from the config')
        out[ours] = tensor.clone().contiguous()
        used.add(dp)
    unused = sorted(set(state) - used)
    if unused:
        raise CheckpointError(f'{ckpt}: {len(unused)} weights have no counterpart here: '
                              f'{unused[:5]}')
    return out


def normalizer_fields(layout: ImageLayout | None) -> dict[str, tuple[str, ...]]:
    """Our normalizer field -> the DP fields concatenated into it, in order."""
    if layout is None:
        return {ours: (dp,) for dp, ours in NORMALIZER_FIELDS.items()}
    return {OBS_STATE: tuple(key for key, _ in layout.lowdim), ACTION: ('action',)}


def _limits(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the (scale, offset) our normalizer computes from [lo, hi]."""
    probe = MinMaxNormalizer({'x': lo.numel()})
    probe.set_stats({'x': {'min': lo.numpy(), 'max': hi.numpy()}})
    return probe.x_scale, probe.x_offset


def _close(theirs: torch.Tensor, mine: torch.Tensor) -> torch.Tensor:
    return (theirs - mine).abs() <= 1e-5 * (1.0 + mine.abs())


def convert_normalizer(state: dict[str, torch.Tensor], model: DiffusionPolicy, ckpt: Path,
                       layout: ImageLayout | None = None) -> None:
    """Set ``model.normalizer`` from DP's LinearNormalizer; refuse what min/max cannot express."""
    fields = normalizer_fields(layout)
    sizes = dict(layout.lowdim) if layout is not None else {}
    stats = {}
    for ours, dp_fields in fields.items():
        lows, highs = [], []
        for dp_field in dp_fields:
            base = f'normalizer.params_dict.{dp_field}.'
            keys = {name: base + name for name in ('scale', 'offset', 'input_stats.min',
                                                   'input_stats.max')}
            missing = [k for k in keys.values() if k not in state]
            if missing:
                raise CheckpointError(
                    f'{ckpt}: the normalizer lacks {missing}; has '
                    f'{sorted(k for k in state if k.startswith("normalizer."))[:12]}')
            lo = state[keys['input_stats.min']].float().flatten()
            hi = state[keys['input_stats.max']].float().flatten()
            scale, offset = (state[keys[p]].float().flatten() for p in ('scale', 'offset'))
            if dp_field in sizes and not lo.numel() == hi.numel() == scale.numel() == \
                    offset.numel() == sizes[dp_field]:
                raise CheckpointError(f'{ckpt}: {base}* have {lo.numel()} dims, but shape_meta '
                                      f'gives {dp_field} shape [{sizes[dp_field]}]')
            if ours == OBS_STATE and lo.shape == scale.shape == offset.shape and (
                    _close(scale, torch.ones_like(scale)).all()
                    and _close(offset, torch.zeros_like(offset)).all()
                    and not all(_close(a, b).all() for a, b in zip((scale, offset),
                                                                   _limits(lo, hi)))):
                # DP's identity normalizer (e.g. quaternions): the min-max map of [-1, 1].
                logger.info('%s: DP normalizer %r is the identity; importing it as [-1, 1]',
                            ckpt, dp_field)
                lo, hi = -torch.ones_like(lo), torch.ones_like(hi)
            lows.append(lo)
            highs.append(hi)
        stats[ours] = {'min': torch.cat(lows).numpy(), 'max': torch.cat(highs).numpy()}
    try:
        model.normalizer.set_stats(stats)
    except ValueError as error:
        raise CheckpointError(f'{ckpt}: normalizer: {error}') from error
    if layout is not None:
        dp_image.check_image_normalizer(state, layout.cameras, ckpt)
    for ours, dp_fields in fields.items():
        at = 0
        for dp_field in dp_fields:
            base = f'normalizer.params_dict.{dp_field}.'
            size = state[base + 'input_stats.min'].numel()
            for part in ('scale', 'offset'):
                theirs = state[base + part].float()
                mine = getattr(model.normalizer, f'{ours}_{part}')[at:at + size]
                if theirs.shape != mine.shape:
                    raise CheckpointError(f'{ckpt}: shape mismatch: {base + part} has shape '
                                          f'{tuple(theirs.shape)}, expected '
                                          f'{tuple(mine.shape)}')
                _check_part(ckpt, dp_field, part, theirs, mine)
            at += size


def _check_part(ckpt: Path, dp_field: str, part: str, theirs: torch.Tensor,
                mine: torch.Tensor) -> None:
    """Refuse a DP normalizer part that differs from the min-max map ours computed."""
    off = ~_close(theirs, mine)
    if off.any():
        dims = off.nonzero().flatten().tolist()
        raise CheckpointError(
            f"{ckpt}: DP normalizer {dp_field!r} is not the min-max [-1, 1] ('limits') map of "
            f'its input_stats that ours computes (nor the identity, for a low-dim obs key): '
            f'{part} differs in dims {dims[:8]} (theirs {theirs[dims[:3]].tolist()}, ours '
            f'{mine[dims[:3]].tolist()}); gaussian or fit_offset=False normalizers are not '
            f'supported')


def import_checkpoint(ckpt_path: str | Path, out: str | Path,
                      config_yaml: str | Path | None = None, weights: str = 'ema',
                      overrides: dict[str, Any] | None = None,
                      force: bool = False) -> Path:
    """Convert a DP low-dim or hybrid image checkpoint into the model folder ``out``."""
    ckpt = load_dp_checkpoint(ckpt_path)
    out = Path(out)
    if (out / CONFIG_FILE).exists() and not force:
        raise CheckpointError(f'{out} already holds a model ({CONFIG_FILE}); pass --force to '
                              f'overwrite it')
    if config_yaml is not None:
        cfg, source = read_config_yaml(config_yaml), f'--config-yaml {config_yaml}'
    elif ckpt.cfg is not None:
        cfg, source = resolve_interpolations(ckpt.cfg), 'the checkpoint cfg'
    else:
        cfg = None
        source = (f'the checkpoint cfg is a {ckpt.cfg_refused}, not read' if ckpt.cfg_refused
                  else 'the checkpoint has no cfg')
    state, which = select_weights(ckpt, weights)
    check_supported(state, ckpt.path)
    layout = read_layout(state, cfg, source, ckpt.path)
    config = build_config(state, cfg, source, ckpt.path, overrides, layout)
    model = DiffusionPolicy(config)
    convert_normalizer(state, model, ckpt.path, layout)
    load_state_strict(model, convert_weights(state, model, ckpt.path, layout), str(ckpt.path))
    save_policy(model, out, extra={'source': {'checkpoint': str(ckpt.path), 'weights': which,
                                              'config_from': source}})
    logger.info('imported %s (%s weights) into %s', ckpt.path, which, out)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: import-dp-checkpoint CKPT --out MODEL_DIR."""
    parser = argparse.ArgumentParser(
        prog='import-dp-checkpoint',
        description='Convert a real-stanford/diffusion_policy transformer checkpoint (.ckpt) '
                    'of a low-dim or hybrid image policy (robomimic ResNet-18 GroupNorm '
                    'encoder) into a model folder (config.json, model.safetensors, '
                    'stats.safetensors). Nothing in the checkpoint is executed.')
    parser.add_argument('ckpt', help='the .ckpt file (e.g. <run>/checkpoints/latest.ckpt)')
    parser.add_argument('--out', required=True, help='model folder to write')
    parser.add_argument('--config-yaml', help="the run's .hydra/config.yaml (DP's cfg is a "
                                              'pickled DictConfig, which is not read)')
    parser.add_argument('--weights', choices=('ema', 'raw'), default='ema',
                        help="'ema' (default; falls back to raw with a warning) or 'raw'")
    parser.add_argument('--n-head', type=int, help='attention heads (not in the weights)')
    parser.add_argument('--n-action-steps', type=int, help='actions executed per call')
    parser.add_argument('--num-inference-steps', type=int, help='denoising steps per call')
    parser.add_argument('--control-hz', type=float, help='action rate (default 10 Hz)')
    parser.add_argument('--force', action='store_true', help='overwrite an existing model')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')
    overrides = {'n_head': args.n_head, 'n_action_steps': args.n_action_steps,
                 'num_inference_steps': args.num_inference_steps,
                 'control_hz': args.control_hz}
    try:
        out = import_checkpoint(args.ckpt, args.out, args.config_yaml, args.weights, overrides,
                                args.force)
    except (ValueError, FileNotFoundError) as error:
        print(f'import-dp-checkpoint: {error}', file=sys.stderr)
        return 1
    print(f'wrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
