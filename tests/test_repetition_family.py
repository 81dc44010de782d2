"""The repetition-penalized family beyond unlikelihood: ScaleGrad, CT and SimCTG against
their papers' limits and their authors' code (tests/fixtures/authors/, each file naming its
source and licence). The registry's own references (written from the papers' equations)
are checked for every loss by tests/test_loss_properties.py (matches_reference)."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import load_module

from lossbench.losses import get_loss, mean_over_tokens

AUTHORS = Path(__file__).parent / "fixtures" / "authors"


def _authors(name):
    return load_module(AUTHORS / f"{name}.py", f"authors_{name}")


def _case(B=3, T=12, V=7, seed=0, scale=2.0, low=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64) * scale
    targets = torch.randint(low, V - 1 if low == 0 else V, (B, T), generator=g)
    return logits, targets


def _ce(logits, targets):
    return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none", ignore_index=-100)


# --- ScaleGrad -------------------------------------------------------------------------------

def test_scalegrad_at_gamma_one_is_cross_entropy():
    logits, targets = _case()
    targets[0, 3] = -100
    out = get_loss("scalegrad")(logits, targets, gamma=1.0)
    torch.testing.assert_close(out, _ce(logits, targets), rtol=1e-12, atol=1e-12)


def test_scalegrad_matches_the_authors_code():
    sg = _authors("scalegrad_lin2021")
    # their mask needs V >= T (a vocabulary of 50k): 12 classes, targets among the first 4 so
    # that rows repeat a lot, token 0 (which their mask treats apart) included
    logits, _ = _case(T=12, V=12, scale=1.0)
    targets = torch.randint(0, 4, (3, 12), generator=torch.Generator().manual_seed(1))
    for gamma in (0.2, 0.5, 1.0):
        ours = get_loss("scalegrad")(logits, targets, gamma=gamma)
        for b in range(logits.shape[0]):
            theirs = sg.scalegrad_row_loss(logits[b:b + 1], targets[b:b + 1], gamma)
            # their +1e-8 on every p~ moves -log p~ by up to 1e-8 / p~_y (~1e-5 here); a wrong
            # mask or scale moves it by |log gamma| ~ 1
            torch.testing.assert_close(ours[b], theirs, rtol=0, atol=1e-4)


def test_scalegrad_favours_novel_targets():
    """gamma < 1 raises the loss of a novel target and lowers that of a repeated one
    against CE: the paper's direction, on a row where both occur."""
    logits = torch.zeros(1, 3, 4, dtype=torch.float64)
    targets = torch.tensor([[0, 0, 1]])  # t=1: 0 is used; t=2: 1 is novel (0 used)
    out, ce = get_loss("scalegrad")(logits, targets, gamma=0.2), _ce(logits, targets)
    assert out[0, 1] < ce[0, 1] and out[0, 2] > ce[0, 2]


# --- CT --------------------------------------------------------------------------------------

def test_ct_with_no_negatives_is_cross_entropy():
    logits, targets = _case()
    targets[1, 0] = -100
    out = get_loss("ct")(logits, targets, negatives=0)
    torch.testing.assert_close(out, _ce(logits, targets), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("m", [2, 5, 12])
def test_ct_matches_the_authors_code(m):
    """The package's CT over the whole sequence (ct_length=1.0) with M = m, plus CE (the
    paper trains CE + CT); pad_id = V - 1, a token the targets never use, so the package's
    padding marks nothing."""
    ctl = _authors("ct_jiang2022")
    logits, targets = _case(T=12, V=7)  # targets in [0, 6): id 6 is the pad
    theirs = F.cross_entropy(logits.flatten(0, 1), targets.flatten()) + \
        ctl.contrastive_token_loss(logits, targets, pad_id=6, ct_length=1.0,
                                   preced_m_negatives=m)
    ours = mean_over_tokens(get_loss("ct")(logits, targets, negatives=m), targets)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_ct_counts_ignored_positions_as_nobodys_negatives():
    logits, targets = _case(B=1, T=6, V=5)
    targets[0] = torch.tensor([1, 2, 3, 0, 4, 0])
    masked = targets.clone()
    masked[0, 1] = -100
    out = get_loss("ct")(logits, masked, negatives=5)[0, 4]
    z = logits[0, 4]  # negatives of t=4: targets 1, 3, 0 (2 is ignored)
    expected = -torch.log_softmax(z, 0)[4] + torch.log(1 + sum(torch.exp(z[c] - z[4])
                                                                for c in (1, 3, 0)))
    torch.testing.assert_close(out, expected)


# --- SimCTG ----------------------------------------------------------------------------------

def _hidden(B=3, T=12, C=5, seed=2):
    return torch.randn(B, T, C, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_simctg_at_margin_zero_is_cross_entropy():
    logits, targets = _case()
    targets[2, 5] = -100
    out = get_loss("simctg")(logits, targets, margin=0.0, hidden_states=_hidden())
    torch.testing.assert_close(out, _ce(logits, targets), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("margin", [0.5, 1.0, 1.7])
def test_simctg_matches_the_authors_code(margin):
    """Their SimCTGLoss returns (mle, cl); they train on mle + cl. pad_token_id = V: no input
    is padding (every row keeps all T positions, as in lossbench's training batches)."""
    authors = _authors("simctg_su2022")
    logits, targets = _case(V=7)
    hidden = _hidden()
    inputs = torch.randint(0, 7, targets.shape, generator=torch.Generator().manual_seed(3))
    mle, cl = authors.SimCTGLoss(margin, 7, pad_token_id=7)(hidden, logits, inputs, targets)
    ours = mean_over_tokens(get_loss("simctg")(logits, targets, margin=margin,
                                               hidden_states=hidden), targets)
    assert cl > 0
    torch.testing.assert_close(ours, mle + cl, rtol=1e-10, atol=1e-10)


def test_simctg_without_hidden_states_says_what_it_needs():
    logits, targets = _case()
    with pytest.raises(ValueError, match=r"simctg needs hidden_states \(B, T, C\)"):
        get_loss("simctg")(logits, targets)
    assert get_loss("simctg").needs_hidden and "hidden_states" in get_loss("simctg").extra_inputs
    assert not any(get_loss(n).needs_hidden for n in ("cross_entropy", "scalegrad", "ct"))


# --- Su et al.'s diversity and rep-n of continuations ----------------------------------------

def test_rep_n_and_diversity_match_the_authors_script():
    """Their script pools n-gram counts over texts of whitespace-separated tokens, reports
    percentages rounded to 2 decimals, and leaves out each text's last n-gram (its loop
    stops at end_idx < len): an end marker that never repeats gives it every n-gram."""
    from lossbench.train.evaluation import continuation_diversity, sequence_repetition

    authors = _authors("simctg_eval_su2022")
    g = torch.Generator().manual_seed(5)
    conts = torch.cat([torch.randint(0, 4, (6, 30), generator=g),  # repetitive rows
                       torch.tensor([[1, 2, 3] * 10, list(range(30))])])
    texts = [" ".join(f"t{c}" for c in row) + " <end>" for row in conts.tolist()]
    rep2, rep3, rep4, div = authors.measure_repetition_and_diversity(texts)
    ours = continuation_diversity(conts)
    assert ours["seq_rep_2"] * 100 == pytest.approx(rep2, abs=0.005)
    assert ours["seq_rep_3"] * 100 == pytest.approx(rep3, abs=0.005)
    assert sequence_repetition(conts, 4)["seq_rep_4"] * 100 == pytest.approx(rep4, abs=0.005)
    assert ours["diversity"] == pytest.approx(div, abs=2e-4)
    assert 0 < ours["diversity"] < 1


def test_evaluation_reports_rep_n_and_diversity_of_its_continuations():
    from helpers import tiny

    from lossbench.train.loop import train_run

    final = train_run(tiny()).evals[-1]
    assert final["diversity"] == pytest.approx(
        (1 - final["seq_rep_2"]) * (1 - final["seq_rep_3"]) * (1 - final["seq_rep_4"]))
    from lossbench.core.metrics import BY_COLUMN, tunable

    assert BY_COLUMN["final_diversity"].direction == "higher"
    assert BY_COLUMN["final_seq_rep_2"].direction == "lower"
    assert {"seq_rep_2", "seq_rep_3", "diversity"} <= set(tunable())
    assert "Su et al." in BY_COLUMN["final_diversity"].reference


# --- the unlikelihood the later papers compare with --------------------------------------------

def test_unlikelihood_is_the_criterion_the_later_papers_use_within_a_row():
    """Welleck's fairseq criterion (their baselines' UL) on one row equals ours: the same
    candidates. Its pad id (fairseq's 1; the triangle's arithmetic needs pad * pad = pad) is
    always a candidate: a pad column with logit -1e4 costs nothing. It flattens the batch
    first, so on two rows the second row's candidates include the first row's tokens: there
    the two differ."""
    authors = _authors("ul_welleck_criterion")
    logits, _ = _case(B=2, T=10, V=8, scale=1.0)
    logits[..., 1] = -1e4  # the pad id, never a target
    targets = torch.randint(0, 4, (2, 10), generator=torch.Generator().manual_seed(4))
    targets[targets == 1] = 5
    ours = get_loss("unlikelihood")(logits, targets, alpha=1.0)
    for b in range(2):
        theirs = authors.candidate_penalty_loss(torch.log_softmax(logits[b], -1), targets[b], 1)
        torch.testing.assert_close(ours[b].sum(), theirs, rtol=1e-10, atol=1e-10)
    flat = authors.candidate_penalty_loss(torch.log_softmax(logits.flatten(0, 1), -1),
                                          targets.flatten(), 1)
    assert abs(flat - ours.sum()) > 1e-3  # row 1 also pushes down row 0's tokens there
