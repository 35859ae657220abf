from harmonycell.agents import messages as m
from harmonycell.agents.routing import PRODUCES, ROUTES, next_speaker


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
    assert next_speaker(v) is None


def test_every_message_an_agent_produces_has_a_route_or_ends():
    agents = set(PRODUCES)
    for source, kinds in PRODUCES.items():
        for k in kinds:
            target = ROUTES.get(k)
            assert target is None or target in agents
            assert target != source, f"{source} would route {k.__name__} to itself"
    assert {t for t in ROUTES.values()} <= agents
