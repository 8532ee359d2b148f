"""The plugin surface: hook markers and hook specifications, nothing else.

Every hook is ``register_<things>(register)``: the core passes a callback and the plugin
calls it once per thing it provides. A plugin may implement any subset of the hooks.
"""

import pluggy

hookspec = pluggy.HookspecMarker("tapweight")
hookimpl = pluggy.HookimplMarker("tapweight")


@hookspec
def register_domains(register):
    """Register domains: ``register(Domain(...))``.

    A domain names its default backbone, objectives and head, its option dataclass
    (``--set <domain>.<option>=...``), its presets, its splits, and ``build_data(cfg,
    table, split, task)``, which turns a loaded `Table` into the
    engine's datasets; optionally ``build_corpus(cfg, path)``, which reads an unlabelled
    corpus for ``tapweight pretrain``, and ``pretrain_presets`` for that command.
    """


@hookspec
def register_backbones(register):
    """Register backbones: ``register(BackboneSpec(name, build))``.

    ``build(cfg, data)`` returns an ``nn.Module`` mapping a batch of inputs to features
    ``[B, out_dim]`` and exposing ``out_dim``; ``data`` is the run's ``DomainData``. Its
    parameters are θ_b at level I and w_b at level II; the proximal term γ‖w_b − θ_b‖²
    runs over them.
    """


@hookspec
def register_objectives(register):
    """Register pretraining objectives: ``register(ObjectiveSpec(name, build))``.

    ``build(backbone, corpus, cfg)`` returns an ``nn.Module`` whose ``forward(backbone,
    batch)`` returns one unweighted scalar loss L_k; the engine owns the weights λ.
    """


@hookspec
def register_heads(register):
    """Register task heads: ``register(HeadSpec(name, build))``.

    ``build(in_dim, n_outputs, cfg)`` returns an ``nn.Module`` from features to outputs.
    """


@hookspec
def register_datasets(register):
    """Register labelled data sets: ``register(DatasetSpec(name, load))``.

    ``load(cfg)`` returns a `Table`, reading ``cfg.data`` when set and
    otherwise the data directory or the canonical download.
    """


@hookspec
def register_tasks(register):
    """Register downstream tasks: ``register(TaskSpec(domain, name, dataset, split, ...))``.

    A task ties a data set to a split, a loss, a metric and task-specific config defaults;
    users run it as ``tapweight run <domain> <name>``.
    """


@hookspec
def register_loggers(register):
    """Register experiment trackers: ``register(LoggerSpec(name, build))``.

    ``build(cfg, folder, step)`` returns an object with ``log(values, step)`` and ``close()``;
    a run reports to the trackers named in ``--set report_to=[name,...]`` (rank 0, once per
    seed): every global step's λ, objective losses, level II and validation losses and
    hypergradient, the final fine-tune's validation metric per epoch, and the seed's results.
    """


@hookspec
def register_methods(register):
    """Register weighting methods: ``register(MethodSpec(name, build))``.

    ``build(cfg, argument)`` returns a fresh ``tapweight.Weighting`` for one seed: the rule
    that sets λ at every global step from what the engine exposes (a ``Signal``: the
    objectives' losses, the hypergradient dL_val/dλ, each objective's gradient norm and its
    cosine with w's validation gradient, as the rule declares it needs them). Users choose it
    with ``--method <name>`` and set its options with ``--set weighting.<name>.<option>=...``.
    """


@hookspec
def register_estimators(register):
    """Register hypergradient estimators: ``register(EstimatorSpec(name, estimator))``.

    ``estimator`` is a ``tapweight.Estimator`` subclass: ``directional(step, direction)``
    returns the K directional derivatives ⟨∇L_k(θ), d⟩ of one inner step (or, with
    ``needs_hessians``, ``implicit(problem)`` the whole hypergradient), and its class
    attributes say its cost, precision, exactness and the settings it suits, which ``auto``
    weighs. Users choose it with ``--set reweight.hypergrad=<name>``.
    """


@hookspec
def register_commands(cli):
    """Add commands to the ``tapweight`` command line: ``cli`` is the ``typer.Typer`` app."""
