from harmonycell.agents import messages as m
from harmonycell.agents.routing import next_speaker
from harmonycell.agents.team import PRODUCES, ROUTES


def test_happy_path_order():
    order = [m.RunRequest, m.AuditDone, m.UnifyDone, m.NodePlan, m.NodeExecuted, m.NodeScored,
             m.SearchDone, m.TestScored]
    assert [ROUTES[t] for t in order] == ["DataAuditor", "Unifier", "Planner", "Coder",
                                          "Evaluator", "Planner", "Evaluator", "Judge"]


def test_failures_go_to_debugger_then_back_to_planner():
    assert ROUTES[m.NodeFailed] == "Debugger"
    assert ROUTES[m.NodeAbandoned] == "Planner"


def test_verdict_ends_conversation():
    v = m.Verdict(valid=True, checks=[])
    assert next_speaker(v, ROUTES) is None


def test_every_message_an_agent_produces_has_a_route_or_ends():
    agents = set(PRODUCES)
    for source, kinds in PRODUCES.items():
        for k in kinds:
            target = ROUTES.get(k)
            assert target is None or target in agents
            assert target != source, f"{source} would route {k.__name__} to itself"
    assert {t for t in ROUTES.values()} <= agents


def test_team_graph_is_the_routing_table(tmp_path, synthetic_dir):
    """The real autogen GraphFlow's edges are exactly the table (normal and chat mode)."""
    from harmonycell.agents.cli.chat import CHAT_PRODUCES, CHAT_ROUTES, User
    from harmonycell.agents.context import RunContext
    from harmonycell.agents.team import build_team
    from harmonycell.sandbox.local import LocalBackend
    from harmonycell.tools.record.runfolder import create_run
    from harmonycell.tools.record.transcript import Transcript

    run = create_run(tmp_path, [synthetic_dir / "labA_counts.h5ad"], "unseen-perturbation")
    ctx = RunContext(run=run, config=run.config(), transcript=Transcript(run.root), backend=LocalBackend())
    for routes, produces, extra in ((ROUTES, PRODUCES, []), (CHAT_ROUTES, CHAT_PRODUCES, [User(ctx, input)])):
        team = build_team(ctx, extra=extra, routes=routes, produces=produces)
        graph = team._graph
        edges = {(name, e.target) for name, node in graph.nodes.items() for e in node.edges}
        expected = {(src, routes[k]) for src, kinds in produces.items() for k in kinds if k in routes}
        assert edges == expected
        assert graph.default_start_node == "DataAuditor"


def test_routes_are_derived_from_the_agents_handlers():
    """Adding a handler to an agent class is all it takes to route a new message type."""
    from harmonycell.agents.base import StepAgent
    from harmonycell.agents.routing import derive
    from harmonycell.agents.team import TEAM

    class Reviewer(StepAgent):
        def on_Verdict(self, v: m.Verdict) -> m.Approval:
            raise NotImplementedError

    routes, produces = derive((*TEAM, Reviewer))
    assert routes[m.Verdict] == "Reviewer" and produces["Reviewer"] == (m.Approval,)
    assert routes[m.NodeFailed] == "Debugger" and produces["Debugger"] == (m.NodeExecuted, m.NodeAbandoned)
    assert m.Verdict not in ROUTES  # the real team ends at the Judge's verdict
