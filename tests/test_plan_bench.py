"""The acquisition benchmark's machinery on a tiny synthetic world (the real run: bench/acquisition.py)."""

from bench import acquisition as acq


def tiny_world(seed=0):
    return acq.synthetic_world(seed, coexpression=1.5, n_genes=80, n_pathways=3, pathway_size=12, n_ctrl=300)


def test_every_method_starts_from_the_same_point_and_never_acquires_test_genes(monkeypatch):
    world = tiny_world()
    taken = []
    real_choose = acq.choose

    def spy(method, w, acquired, pool, *a, **kw):
        picked = real_choose(method, w, acquired, pool, *a, **kw)
        taken.append((method, set(picked.tolist()), set(acquired.tolist())))
        return picked

    monkeypatch.setattr(acq, "choose", spy)
    rep = acq.replicate(world, 0, test_frac=0.2, start_n=4, b=3, rounds=2, members=4)
    firsts = {name: c["all"][0] for name, c in rep["curves"].items()}
    assert len(set(firsts.values())) == 1  # same start set, same first point
    test = set(rep["test"])
    assert len(test) == 16
    for method, picked, acquired in taken:
        assert len(picked) == 3 and not picked & test and not picked & acquired, method


def test_summary_has_intervals_a_null_control_and_a_plain_statement():
    reps = [acq.replicate(tiny_world(s), 0, 0.2, 4, 3, 2, 4) for s in range(3)]
    rows = acq.summarise(reps, "all")
    for m in acq.METHODS:
        lo, hi = rows[m]["ci95"]
        assert lo <= rows[m]["diff_vs_random"] <= hi and rows[m]["n_replicates"] == 3
    assert "covers_zero" in rows["null"]
    assert rows["statement"] == "nothing beats random here" or "beat random" in rows["statement"]
    assert acq.summarise(reps, "pathway") is not None  # synthetic worlds define pathway genes


def test_auc_is_the_mean_height_of_the_learning_curve():
    assert acq.auc([1.0, 1.0, 1.0]) == 1.0
    assert acq.auc([2.0, 0.0]) == 1.0
    assert acq.auc([1.0, None]) is None
