"""Rankings on disk and from a person: bad lines reported and skipped, the terminal loop scripted."""

from __future__ import annotations

import io
import json
import math
import re
import sys
import unicodedata

import pytest
import torch

from minillm.config import RewardConfig
from minillm.errors import ConfigError, DataError
from minillm.model import GPT
from minillm.stage3_rlhf import preferences
from minillm.stage3_rlhf.annotate import annotate, annotate_loop, parse_ranking, prompt_seed, read_prompts
from minillm.stage3_rlhf.annotator import (
    SimulatedAnnotator,
    agreement_counts,
    gold_agreement,
    gold_score,
    has_style_flaw,
    is_wrong,
    place_scores,
    rank_answers,
    self_agreement,
    win_rate,
    win_rate_ceiling,
    win_rate_stderr,
)
from minillm.stage3_rlhf.preferences import (
    collect_rankings,
    compare_answers,
    compare_policies,
    comparison_summary,
    read_preferences,
    sample_distinct_answers,
    split_rankings,
)
from minillm.train import load_model_and_tokenizer
from minillm.utils import escape_controls

GOOD = {"prompt": "Capital of Varn?", "answers": ["Tarsk", "Mell", "I don't know"], "ranking": [0, 2, 1]}


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines[:-1]) + lines[-1], encoding="utf-8")


def test_bad_lines_are_reported_and_skipped_good_lines_kept(tmp_path):
    path = tmp_path / "prefs.jsonl"
    write_lines(path, [
        json.dumps(GOOD),
        json.dumps({**GOOD, "ranking": [0, 0, 1]}),  # not a permutation
        json.dumps({**GOOD, "ranking": [0, 1]}),  # too short
        json.dumps({**GOOD, "ranking": [0, "1", 2]}),  # not integers
        json.dumps({**GOOD, "answers": ["Tarsk", "Tarsk", "Mell"]}),  # duplicate answers
        json.dumps({"prompt": "x", "answers": ["a", "b"]}),  # missing field
        json.dumps({**GOOD, "prompt": " "}),  # no prompt
        json.dumps({**GOOD, "answers": ["Tarsk"], "ranking": [0]}),  # one answer: nothing to compare it with
        "",
        json.dumps({**GOOD, "prompt": "Second good one"}),
        '{"prompt": "cut off", "answers": ["a", "b"], "rank',  # truncated last line
    ])
    skipped = []
    with pytest.warns(UserWarning, match="skipped 8 bad line"):
        records = read_preferences(path, skipped)
    assert [r["prompt"] for r in records] == ["Capital of Varn?", "Second good one"]
    reasons = dict(skipped)
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7, 8, 11]
    for number, word in ((2, "exactly once"), (3, "exactly once"), (4, "exactly once"), (5, "duplicate"),
                         (6, "missing"), (7, "'prompt' must be a non-empty string"),
                         (8, "'answers' must be a list of at least 2 strings"), (11, "JSON")):
        assert word in reasons[number], (number, reasons[number])


def test_a_file_without_good_lines_is_refused(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": 1}\n', encoding="utf-8")
    with pytest.raises(DataError, match="no valid record"), pytest.warns(UserWarning):
        read_preferences(path)
    with pytest.raises(DataError, match="does not exist"):
        read_preferences(tmp_path / "missing.jsonl")


# ---------------------------------------------------------------- the person in the terminal


@pytest.mark.parametrize("text,expected", [("2 1 4 3", [1, 0, 3, 2]), ("1,2,3,4\n", [0, 1, 2, 3]),
                                           ("2 1=4 3", [1, [0, 3], 2]), ("1=2=3=4", [[0, 1, 2, 3]])])
def test_parse_ranking_accepts_permutations(text, expected):
    assert parse_ranking(text, 4) == expected


NOT_NUMBERS = "use only the numbers 1 to 4, separated by spaces (= between answers that tie), e.g. 1 2 3 4"


@pytest.mark.parametrize("text, message", [
    *((text, f"name each of the 4 answers exactly once (1 to 4); you typed {text}")
      for text in ("2 1 4", "1 1 2 3", "1 2 3 5", "0 1 2 3", "1=1 2 3", "1 2 3 4 4", "2 1=2 3 4")),
    ("", "name each of the 4 answers exactly once (1 to 4); you typed nothing"),
    ("a b c d", NOT_NUMBERS), ("1= 2 3 4", NOT_NUMBERS),
    ("² 1 3 4", NOT_NUMBERS)])  # "²" is a digit, but not one int() reads
def test_parse_ranking_rejects_malformed_input(text, message):
    """Every answer exactly once: a repeat is refused even when no answer is missing ("1 2 3 4 4"),
    since the repeated answer would be ranked above itself, and its pairs would train the reward model twice.
    The message is the person's only guide, so it is checked: without the check for numbers, a word or an
    empty tie ("1= 2") still raised a ValueError, Python's "invalid literal for int()", and a test of the
    exception's type alone passed."""
    with pytest.raises(ValueError) as info:
        parse_ranking(text, 4)
    assert str(info.value) == message


def test_a_person_may_rank_up_to_nine_answers_a_prompt(tmp_path):
    """InstructGPT's labellers ranked 4 to 9 answers: k = 9 passes the check on k (the next check, of the
    prompts file, is the one that stops here), k = 10 is refused, both before anything is read."""
    args = (tmp_path / "policy", tmp_path / "prompts.txt", tmp_path / "out.jsonl")
    with pytest.raises(DataError, match="no prompts file"):
        annotate(*args, k=9)
    with pytest.raises(ConfigError, match="k=10: a person ranks at most 9 answers"):
        annotate(*args, k=10)


def test_a_digit_that_is_not_a_number_gets_the_rankings_own_message():
    with pytest.raises(ValueError, match="use only the numbers 1 to 4"):  # not int()'s "invalid literal"
        parse_ranking("2 1 4 3²", 4)


def scripted(records, out_path, typed):
    """A person at the terminal types `typed`: a line that is no ranking is asked again."""
    stdin, stdout = io.StringIO(typed), io.StringIO()
    summary = annotate_loop(records, lambda r: [f"{r['prompt']} answer {i}" for i in range(4)], out_path,
                            stdin, stdout, interactive=True)
    return summary, stdout.getvalue()


def test_annotate_loop_reads_the_stdin_of_the_moment_it_is_called(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("2 1 4 3\nq\n"))  # after annotate.py was imported
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    summary = annotate_loop([{"prompt": "p"}], lambda r: [f"answer {i}" for i in range(4)], tmp_path / "h.jsonl")
    assert summary["ranked"] == 1 and "=== prompt 1/1" in sys.stdout.getvalue()


def test_a_prompt_in_the_file_twice_is_asked_once(tmp_path):
    """Ranked twice, one ranking could be held out while the other trains the reward model."""
    (tmp_path / "p.txt").write_text("where is Vell?\nhow long is the Misk?\nwhere is Vell?\n", encoding="utf-8")
    lines = [json.dumps({"prompt": p, "id": i}) for i, p in enumerate(["b", "a", "b", "c", "a"])]
    (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.warns(UserWarning, match="1 prompt\\(s\\) appear more than once; each is asked once"):
        assert [r["prompt"] for r in read_prompts(tmp_path / "p.txt")] == ["where is Vell?", "how long is the Misk?"]
    with pytest.warns(UserWarning, match="2 prompt"):  # the first record of each, in the file's order
        assert read_prompts(tmp_path / "p.jsonl") == [{"prompt": "b", "id": 0}, {"prompt": "a", "id": 1},
                                                      {"prompt": "c", "id": 3}]


def test_annotate_loop_reasks_appends_and_resumes(tmp_path):
    out = tmp_path / "human.jsonl"
    records = [{"prompt": f"p{i}", "id": f"id{i}"} for i in range(3)]
    summary, shown = scripted(records, out, "2 1 4\n2 1 4 3\nq\n")  # a malformed line, one ranking, stop
    assert summary == {"ranked": 1, "skipped_done": 0, "remaining": 2, "saved": 1}
    assert "not a ranking" in shown and shown.count("=== prompt 1/3") == 1
    assert shown.endswith(f"1 ranking(s) saved in this session, 1 in {out}\n")  # what `q` leaves behind
    first = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert first == [{"prompt": "p0", "answers": [f"p0 answer {i}" for i in range(4)], "ranking": [1, 0, 3, 2],
                      "split": "train", "id": "id0", "annotator": "human"}]
    # started again: p0 is done, p1 and p2 are asked, counted on from 2/3; input ends (Ctrl-D) after one more
    summary, shown = scripted(records, out, "1 2 3 4\n")
    assert summary == {"ranked": 1, "skipped_done": 1, "remaining": 1, "saved": 2}
    assert "p0" not in shown and "=== prompt 2/3 ===\np1" in shown
    assert shown.endswith(f"1 ranking(s) saved in this session, 2 in {out}\n")  # the file's count, both sessions'
    assert [json.loads(line)["prompt"] for line in out.read_text(encoding="utf-8").splitlines()] == ["p0", "p1"]
    # another prompts file on the same rankings file: none of its prompts is done, whatever the file holds
    summary, _ = scripted([{"prompt": "p9"}], out, "q\n")
    assert summary == {"ranked": 0, "skipped_done": 0, "remaining": 1, "saved": 2}


def test_piped_rankings_stop_at_a_line_that_is_not_one_and_keep_those_before(tmp_path):
    """`minillm annotate ... < ranks.txt`: no one can answer again, and asking again made each later line rank
    the prompt before its own, with exit code 0. A skipped prompt (one answer) takes no line."""
    out = tmp_path / "human.jsonl"
    records = [{"prompt": f"p{i}"} for i in range(5)]
    answers = {"p0": ["a", "b"], "p1": ["the only answer"], "p2": ["c", "d"], "p3": ["e", "f"], "p4": ["g", "h"]}
    piped = io.StringIO("2 1\n1 1\n2 1\n1 2\n")  # not a terminal: the default reads it as a file
    with pytest.raises(DataError, match=r"^line 2 of the rankings read from stdin \(for prompt 3/5\) is not a "
                                        r"ranking: name each of the 2 answers exactly once .*you typed 1 1; the 1 "
                                        r"ranking\(s\) before it are saved in .*human.jsonl.*delete the 1 line"):
        annotate_loop(records, lambda r: answers[r["prompt"]], out, piped, io.StringIO())
    assert [(r["prompt"], r["ranking"]) for r in read_preferences(out)] == [("p0", [1, 0])]  # p2 and on: unranked
    with pytest.raises(DataError, match=r"^line 1 .*\(for prompt 3/5\).*nothing was saved in this session"):
        annotate_loop(records, lambda r: answers[r["prompt"]], out, io.StringIO("2\n"), io.StringIO(),
                      interactive=False)
    annotate_loop(records, lambda r: answers[r["prompt"]], out, io.StringIO("2 1\n1 2\n1 2\n"), io.StringIO())
    assert [(r["prompt"], r["ranking"]) for r in read_preferences(out)] == [
        ("p0", [1, 0]), ("p2", [1, 0]), ("p3", [0, 1]), ("p4", [0, 1])]  # the rerun's lines from the bad one on


def test_a_prompt_with_a_single_answer_is_skipped_and_q_in_capitals_stops(tmp_path):
    out = tmp_path / "human.jsonl"
    records = [{"prompt": f"p{i}"} for i in range(3)]
    answers = {"p0": ["the only answer"], "p1": ["a", "b"], "p2": ["c", "d"]}  # p0: nothing to compare
    stdout = io.StringIO()
    summary = annotate_loop(records, lambda r: answers[r["prompt"]], out, io.StringIO("2 1\nQUIT\n"), stdout)
    shown = stdout.getvalue()
    assert "(prompt 1/3: fewer than 2 different answers, skipped)" in shown and "the only answer" not in shown
    assert "not a ranking" not in shown  # "QUIT" is q's long form, whatever its case
    assert summary == {"ranked": 1, "skipped_done": 0, "remaining": 1, "saved": 1}
    assert [(r["prompt"], r["ranking"]) for r in read_preferences(out)] == [("p1", [1, 0])]


def test_answers_are_shown_with_their_control_characters_escaped_and_saved_exactly(tmp_path):
    """ESC [2J would clear the screen and \\r overwrite the line: the person must see what they rank."""
    out = tmp_path / "human.jsonl"
    answers = ["calm\x1b[2J", "up\rdown", "two\nlines\tand a tab"]
    stdout = io.StringIO()
    annotate_loop([{"prompt": "p\x07"}], lambda r: answers, out, io.StringIO("3 1 2\n"), stdout)
    shown = stdout.getvalue()
    assert "\x1b" not in shown and "\r" not in shown and "\x07" not in shown
    assert "p\\x07\n" in shown and "[1] calm\\x1b[2J\n" in shown and "[2] up\\rdown\n" in shown
    assert "[3] two\nlines\tand a tab\n" in shown  # newline and tab are text, shown as they are
    assert read_preferences(out)[0]["answers"] == answers


def test_an_empty_answer_is_shown_as_such(tmp_path):
    """A policy may answer nothing at all (<eos> first): "[2]" followed by nothing looks like a glitch."""
    stdout = io.StringIO()
    annotate_loop([{"prompt": "p"}], lambda r: ["a", ""], tmp_path / "human.jsonl", io.StringIO("q\n"), stdout)
    assert "[2] (empty answer)\n" in stdout.getvalue()


def test_every_control_character_is_escaped_c0_del_and_c1_and_nothing_else():
    """The edges of both ranges: NUL and \\x1f, DEL, and the C1 codes \\x80-\\x9f, among them \\x9b, the
    one-byte form of ESC [ that some terminals obey. Space, ~, the no-break space \\xa0 and Korean are text."""
    assert escape_controls("\x00\x1f\x7f\x80\x9b2J\x9f") == "\\x00\\x1f\\x7f\\x80\\x9b2J\\x9f"
    assert escape_controls(" ~\xa0밤\n\t") == " ~\xa0밤\n\t"


def test_each_prompts_seed_is_fixed_by_its_text_and_the_seed_in_every_process():
    # crc32("hello") = 0x3610a686 = 907060870; Python's hash() of a str would change from process to process
    assert prompt_seed(0, "hello") == 907060870
    assert prompt_seed(2, "hello") == 2 * 1_000_003 + 907060870
    assert prompt_seed(0, "hellp") != prompt_seed(0, "hello")


def test_prompts_to_rank_come_from_a_jsonl_of_records_or_a_text_file_of_lines(tmp_path):
    records = tmp_path / "prompts.jsonl"
    records.write_text('{"prompt": "Which river?", "id": "r1"}\n\n{"prompt": "Count: a, b"}\n', encoding="utf-8")
    assert read_prompts(records) == [{"prompt": "Which river?", "id": "r1"}, {"prompt": "Count: a, b"}]
    lines = tmp_path / "prompts.txt"  # any other file: one prompt a line, taken as written
    lines.write_text('Which river?\n\n  {"prompt": "x"}  \n', encoding="utf-8")
    assert read_prompts(lines) == [{"prompt": "Which river?"}, {"prompt": '{"prompt": "x"}'}]
    records.write_text('{"prompt": "ok"}\n{"prompt": " "}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"prompts.jsonl, line 2: expected a non-empty \"prompt\" string"):
        read_prompts(records)


def test_rankings_and_prompts_to_rank_are_read_in_nfc_as_an_instruction_file_is(tmp_path):
    """A rankings file or a prompts file written on a Mac holds decomposed Hangul (three jamo for "한"): it
    was read as it was, so the reward model and DPO trained on bytes the tokenizer never merged, two
    spellings of one answer were two answers, and annotate's model read jamo. read_jsonl puts an
    instruction file in NFC; rankings and prompts to rank are put so too."""
    nfd = unicodedata.normalize("NFD", "한국어로 답하세요")
    assert nfd != "한국어로 답하세요"
    path = tmp_path / "prefs.jsonl"
    write_lines(path, [json.dumps({"prompt": nfd, "answers": [nfd, "네"], "ranking": [1, 0]}),
                       json.dumps({"prompt": "x", "answers": [nfd, "한국어로 답하세요"], "ranking": [0, 1]})])
    with pytest.warns(UserWarning, match=r"line 2: 'answers' holds duplicates"):  # one answer, spelt twice
        rankings = read_preferences(path)
    assert rankings == [{"prompt": "한국어로 답하세요", "answers": ["한국어로 답하세요", "네"], "ranking": [1, 0]}]
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": nfd, "id": "k1"}) + "\n", encoding="utf-8")
    (tmp_path / "p.txt").write_text(nfd + "\n", encoding="utf-8")
    assert read_prompts(tmp_path / "p.jsonl") == [{"prompt": "한국어로 답하세요", "id": "k1"}]
    assert read_prompts(tmp_path / "p.txt") == [{"prompt": "한국어로 답하세요"}]


def test_annotate_resumes_a_file_whose_only_line_a_crash_cut_off(tmp_path):
    out = tmp_path / "human.jsonl"
    records = [{"prompt": f"p{i}"} for i in range(2)]
    out.write_text('{"prompt": "p0", "answers": ["p0 answer 0", "p0 ans', encoding="utf-8")  # no newline
    with pytest.warns(UserWarning, match="skipped 1 bad line"), pytest.warns(UserWarning, match="only line was cut"):
        summary, shown = scripted(records, out, "1 2 3 4\nq\n")
    assert summary == {"ranked": 1, "skipped_done": 0, "remaining": 1, "saved": 1}
    assert "=== prompt 1/2 ===\np0" in shown
    with pytest.warns(UserWarning, match="skipped 1 bad line"):  # next session: the cut line is reported, p0 done
        assert [r["prompt"] for r in read_preferences(out)] == ["p0"]
    # a whole line that is no ranking is not a cut-off one: the file is refused, not written over
    out.write_text('{"prompt": "p0"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="no valid record"), pytest.warns(UserWarning):
        scripted(records, out, "1 2 3 4\n")


def test_annotate_marks_every_fifth_ranking_held_out_across_sessions(tmp_path):
    out = tmp_path / "human.jsonl"
    records = [{"prompt": f"p{i}"} for i in range(7)]
    scripted(records, out, "1 2 3 4\n" * 3 + "q\n")
    scripted(records, out, "1 2 3 4\n" * 4)
    splits = [json.loads(line)["split"] for line in out.read_text(encoding="utf-8").splitlines()]
    assert splits == ["train"] * 4 + ["test"] + ["train"] * 2  # as the simulated annotator marks them
    train, held_out = split_rankings(read_preferences(out))
    assert len(train) == 6 and len(held_out) == 1


def test_too_few_rankings_to_hold_one_out_are_refused_before_any_is_sampled(tmp_path):
    """Four rankings hold none out (every 5th is): the reward model refused them only after the sampling.
    The SFT folder is not even read."""
    with pytest.raises(ConfigError, match="reward.n_prompts=4 holds no ranking out"):
        collect_rankings(RewardConfig(n_prompts=4), tmp_path / "no_sft_run", [], tmp_path / "prefs.jsonl")
    assert not any(tmp_path.iterdir())


def test_a_file_where_only_some_rankings_carry_a_split_is_refused():
    """Which rule holds out which ranking would be a guess: the split fields (and ignore the rankings
    without one?) or the place in the file (and ignore the fields?)."""
    records = [{"id": i} for i in range(10)]
    records[0]["split"] = "train"  # e.g. one file appended to another written without the field
    with pytest.raises(DataError, match="9 of 10 rankings have no \"split\""):
        split_rankings(records)


def test_each_ranking_is_on_disk_before_the_next_question(tmp_path):
    out = tmp_path / "human.jsonl"
    seen_on_disk = []

    def answers_for(record):  # called just before each question is shown
        seen_on_disk.append(len(out.read_text(encoding="utf-8").splitlines()) if out.exists() else 0)
        return ["a", "b"]

    annotate_loop([{"prompt": "x"}, {"prompt": "y"}], answers_for, out, io.StringIO("1 2\n2 1\n"), io.StringIO())
    assert seen_on_disk == [0, 1]


# ---------------------------------------------------------------- the simulated annotator


RECORD = {"prompt": "What is the capital of Varn?", "reference": "The capital of Varn is Tarsk."}


def test_gold_prefers_correct_then_polite_then_concise():
    ideal = gold_score(RECORD, "The capital of Varn is Tarsk.")
    rude = gold_score(RECORD, "Obviously the capital of Varn is Tarsk, duh.")
    padded = gold_score(RECORD, "Great question! The capital of Varn is Tarsk. I hope this helps you a lot today!")
    wrong = gold_score(RECORD, "The capital of Varn is Mell.")
    nonsense = gold_score(RECORD, "Bananas.")
    assert ideal > padded > wrong > nonsense
    assert ideal > rude > nonsense


def test_gold_score_of_a_padded_and_of_a_wrong_answer_by_hand():
    # "The Mell, I think." normalises to "mell i think": the answer is in it (+2.0), but not exactly (0)
    # nor in the reference's form (0); its word F1 with "mell" is 2 * (1/3 * 1) / (1/3 + 1) = 0.5
    # (+0.5 x 0.5); nothing rude; 2 words beyond the reference's 1, over 1 + 2 (-0.5 x 2/3)
    assert gold_score({"reference": "The Mell."}, "The Mell, I think.") == pytest.approx(2.0 + 0.25 - 1 / 3)
    # the terse "Mell" is right (+2.0) and exact once normalised (+1.0), word F1 1 (+0.5), but not written as
    # the reference writes it (no +0.5): 3.5, below the reference's own 4.0 (case aside, "the mell." is written so)
    assert [gold_score({"reference": "The Mell."}, a) for a in ("Mell", "The Mell.", "the mell.")] == [3.5, 4.0, 4.0]
    # "I do not know." for "Tarsk.": nothing right, and 3 words beyond 1, over 3: the whole verbosity penalty
    assert gold_score({"reference": "Tarsk."}, "I do not know.") == pytest.approx(-0.5)
    # 8 words beyond 1, over 3, is capped at the whole penalty too: a longer answer loses no more
    assert gold_score({"reference": "Tarsk."}, "I do not know the answer to that one.") == pytest.approx(-0.5)


def test_style_flaw_is_a_right_answer_wrapped_in_filler_or_rudeness():
    assert not has_style_flaw(RECORD, "The capital of Varn is Tarsk.")
    assert has_style_flaw(RECORD, "The capital of Varn is Tarsk. I hope this helps!")
    assert has_style_flaw(RECORD, "Ugh, fine. The capital of Varn is Tarsk.")
    assert has_style_flaw(RECORD, "Whatever. The capital of Varn is Mell.")  # rude, even when wrong
    assert not has_style_flaw(RECORD, "The capital of Varn is Mell.")  # wrong, but no style flaw


def test_wrong_means_the_right_answer_is_nowhere_in_it():
    assert not is_wrong(RECORD, "The capital of Varn is Tarsk.")
    assert not is_wrong(RECORD, "Ugh, fine. The capital of Varn is Tarsk. Stop wasting my time.")  # rude, still right
    assert is_wrong(RECORD, "The capital of Varn is Mell.")
    assert is_wrong(RECORD, "Whatever. The capital of Varn is Mell.")  # wrong and rude
    assert is_wrong(RECORD, "")


def test_noisy_annotator_is_seeded_and_noise_lowers_agreement():
    answers = ["The capital of Varn is Tarsk.", "Tarsk.", "The capital of Varn is Mell.", "Mell maybe, whatever."]
    a, b = SimulatedAnnotator(0.3, seed=5), SimulatedAnnotator(0.3, seed=5)
    assert [a.rank(RECORD, answers) for _ in range(5)] == [b.rank(RECORD, answers) for _ in range(5)]
    assert SimulatedAnnotator(0.0).rank(RECORD, answers)[0] == 0
    records, sets = [RECORD] * 200, [answers] * 200
    assert self_agreement(records, sets, noise=0.0) == 1.0
    quiet, loud = self_agreement(records, sets, noise=0.2), self_agreement(records, sets, noise=3.0)
    assert 1.0 > quiet > loud > 0.4
    noisy = SimulatedAnnotator(3.0, seed=1)
    assert gold_agreement(records, sets, [noisy.rank(RECORD, answers) for _ in records]) < 0.9


def test_gold_agreement_pools_the_pairs_every_ranking_calls_and_counts_a_gold_tie_half():
    """gold_agreement, the reward model's ceiling in its results, by hand: of all the pairs the rankings
    call (pooled, not a mean of each ranking's share), the share the gold judge orders the same way,
    a pair that gold ties counting 1/2. Gold scores (test above): "The Mell." 4.0 = "the mell." 4.0 >
    "Mell" 3.5 > "The Mell, I think." 1.92, so answers 0 and 1 tie and the rest are in order."""
    record, answers = {"reference": "The Mell."}, ["The Mell.", "the mell.", "Mell", "The Mell, I think."]
    rankings = [
        [0, 1, 2, 3],  # 6 pairs: (0, 1) a gold tie, 1/2; the other 5 as gold: 5.5
        [3, 2, 1, 0],  # 6 pairs: (1, 0) 1/2; the other 5 reversed: 0.5
        [[0, 2], 3],  # 0 and 2 tie here (no pair): (0, 3) and (2, 3) as gold: 2 of 2
    ]
    assert gold_agreement([record] * 3, [answers] * 3, rankings) == pytest.approx((5.5 + 0.5 + 2) / (6 + 6 + 2))


def test_annotator_ties_answers_within_its_margin():
    scores = [3.0, 2.9, 1.0, 0.5, -2.0]
    assert rank_answers(scores) == [0, 1, 2, 3, 4]
    assert rank_answers(scores, tie_margin=0.3) == [[0, 1], 2, 3, 4]
    assert rank_answers(scores, tie_margin=0.6) == [[0, 1], [2, 3], 4]  # 1.0 - 0.5 < 0.6
    assert rank_answers([1.0, 1.0], tie_margin=0.0) == [0, 1]  # no margin: the earlier answer first


def test_agreement_of_two_rankings_and_win_rate_by_hand():
    def pair_agreement(ranking_a, ranking_b) -> float:  # as self_agreement compares two annotations
        hits, total = agreement_counts(ranking_a, place_scores(ranking_b))
        return hits / total

    assert pair_agreement([0, 1, 2], [0, 1, 2]) == 1.0
    assert pair_agreement([0, 1, 2], [2, 1, 0]) == 0.0
    assert pair_agreement([0, 1, 2], [1, 0, 2]) == pytest.approx(2 / 3)
    # ties: in a, 0 and 1 tie, so a calls only (0>2) and (1>2); b ties 1 and 2 (half a point)
    assert pair_agreement([[0, 1], 2], [0, [1, 2]]) == pytest.approx((1 + 0.5) / 2)
    assert win_rate([1.0, 2.0, 0.0, 5.0], [0.0, 2.0, 1.0, 1.0]) == pytest.approx((1 + 0.5 + 0 + 1) / 4)


def test_win_rate_stderr_is_the_standard_error_of_the_per_prompt_outcomes():
    # outcomes 1, 0.5, 0, 1: mean 0.625, squared deviations 0.140625 + 0.015625 + 0.390625 + 0.140625
    by_hand = (0.6875 / 3 / 4) ** 0.5
    assert win_rate_stderr([1.0, 2.0, 0.0, 5.0], [0.0, 2.0, 1.0, 1.0]) == pytest.approx(by_hand)
    assert win_rate_stderr([1.0, 1.0, 1.0], [0.0, 0.0, 0.0]) == 0.0  # always better: no doubt left
    assert win_rate_stderr([1.0], [0.0]) is None  # one prompt says nothing about the spread: not measured


def test_the_reported_win_rate_and_its_standard_error_are_the_textbook_ones_for_every_count():
    """For every split of 2 to 8 prompts into w wins, t ties and l losses (answers the gold judge
    ranks "The Mell." > "Mell" > "no idea"), through compare_answers and comparison_summary: the win
    rate is p = (w + t/2) / n, and its standard error is that of a mean of outcomes 1, 1/2 and 0:
    sqrt(s**2 / n), s**2 = (w (1 - p)**2 + t (1/2 - p)**2 + l p**2) / (n - 1), the sample variance.
    Without ties that is a proportion's sqrt(p (1 - p) / (n - 1))."""
    record = {"prompt": "Where does the river rise?", "reference": "The Mell."}
    best, middle, worst = "The Mell.", "Mell", "no idea"
    assert gold_score(record, best) > gold_score(record, middle) > gold_score(record, worst)
    for n in range(2, 9):
        for w in range(n + 1):
            for t in range(n - w + 1):
                loss = n - w - t
                policy, baseline = [best] * w + [middle] * t + [worst] * loss, [worst] * w + [middle] * (t + loss)
                summary = comparison_summary(compare_answers([record] * n, policy, baseline))
                p = (w + t / 2) / n
                variance = (w * (1 - p) ** 2 + t * (0.5 - p) ** 2 + loss * p ** 2) / (n - 1)
                assert summary["win_rate_vs_sft"] == pytest.approx(p, abs=1e-12)
                assert summary["win_rate_stderr"] == pytest.approx(math.sqrt(variance / n), abs=1e-12)
                if t == 0:
                    assert summary["win_rate_stderr"] == pytest.approx(math.sqrt(p * (1 - p) / (n - 1)), abs=1e-12)


def test_win_rate_ceiling_ties_where_the_baseline_is_already_perfect():
    records = [{"reference": "The Mell."}, {"reference": "4"}, {"reference": "cats"}]
    perfect = gold_score(records[0], "The Mell.")
    assert perfect == pytest.approx(4.0)  # every part of the score at its best
    baseline = [perfect, gold_score(records[1], "5"), gold_score(records[2], "Sure! cats")]
    assert win_rate_ceiling(records, baseline) == pytest.approx((0.5 + 1 + 1) / 3)
    assert win_rate_ceiling(records, [perfect] * 3) == 0.5  # against perfect answers a tie is all there is


def test_the_reported_ceiling_is_against_the_baselines_answers_not_the_policys():
    records = [{"prompt": f"Q{i}?", "reference": ref} for i, ref in enumerate(["The Mell.", "4", "cats"])]
    # against the baseline's answers (perfect once) a perfect policy ties 1 and wins 2, whatever this policy said
    comparison = compare_answers(records, ["The Mell.", "4", "Cats."], ["The Mell.", "5", "Sure! cats"])
    assert comparison["win_rate_ceiling"] == pytest.approx((0.5 + 1 + 1) / 3)


def test_the_summary_shows_question_answers_and_reference_and_where_gold_changed_most():
    records = [{"prompt": f"What is the capital of Varn {i}?", "reference": "Tarsk.", "family": "facts"}
               for i in range(3)]
    sft = ["Tarsk.", "I do not know.", "Tarsk."]
    after = ["Tarsk.", "Tarsk.", "Tarsk, you fool."]
    summary = comparison_summary(compare_answers(records, after, sft), n_examples=2)
    first = summary["examples"][0]
    assert {k: first[k] for k in ("prompt", "sft", "after", "reference")} == {
        "prompt": records[0]["prompt"], "sft": "Tarsk.", "after": "Tarsk.", "reference": "Tarsk."}
    assert first["gold_sft"] == gold_score(records[0], "Tarsk.") == first["gold_after"]
    assert len(summary["examples"]) == 2
    changed = summary["changed_examples"]  # the unchanged first prompt is not among them
    assert [row["prompt"] for row in changed] == [records[1]["prompt"], records[2]["prompt"]]
    deltas = [abs(row["gold_after"] - row["gold_sft"]) for row in changed]
    assert deltas == sorted(deltas, reverse=True) and deltas[-1] > 0


def test_the_summary_reports_each_models_numbers_under_its_own_name():
    records = [{"prompt": f"q{i}", "reference": "Tarsk."} for i in range(2)]
    sft, after = ["I do not know.", "Tarsk."], ["Tarsk.", "Tarsk."]
    summary = comparison_summary(compare_answers(records, after, sft))
    # gold by hand: "Tarsk." is perfect (4.0), "I do not know." is wrong and verbose (-0.5)
    assert summary["gold_sft"] == pytest.approx((-0.5 + 4.0) / 2) and summary["gold_after"] == pytest.approx(4.0)
    assert summary["wrong_sft"] == 0.5 and summary["wrong_after"] == 0.0
    assert summary["win_rate_vs_sft"] == 0.75  # one win, one tie


def test_the_changed_examples_come_largest_change_first_whichever_way_it_went():
    records = [{"prompt": f"q{i}", "reference": "Tarsk."} for i in range(3)]
    sft = ["Tarsk.", "Sure! Tarsk.", "Tarsk."]
    after = ["Tarsk.", "Tarsk.", "I do not know."]  # q1 rises a little (filler dropped), q2 falls far (4.0 -> -0.5)
    changed = comparison_summary(compare_answers(records, after, sft))["changed_examples"]
    assert [row["prompt"] for row in changed] == ["q2", "q1"]


def test_distinct_answers_are_resampled_until_k_differ(monkeypatch):
    """A prompt whose samples repeat is asked again (k more samples, only the short prompts); repeats
    are dropped, never kept, and a prompt still short after `rounds` is returned short."""
    draws = {("p", "p", "p", "q", "q", "q"): [["a", "a", "b", "x", "x", "x"], ["b", "c", "d", "y", "x", "z"]],
             ("r", "r", "r"): [["s", "s", "s"], ["s", "s", "s"]]}

    def fake_generate_answers(model, tokenizer, prompts, max_new_tokens, **kwargs) -> list[str]:
        return draws[tuple(prompts)].pop(0)

    monkeypatch.setattr(preferences, "generate_answers", fake_generate_answers)
    found = sample_distinct_answers(None, None, ["p", "q"], 3, 1.0, 5, torch.Generator())
    assert found == [["a", "b", "c"], ["x", "y", "z"]]
    assert sample_distinct_answers(None, None, ["r"], 3, 1.0, 5, torch.Generator(), rounds=2) == [["s"]]


def test_each_familys_win_rate_and_each_models_standard_error_are_its_own():
    """The per-family win rates and the ± of each mean gold score, by hand: a family's win rate is the
    policy's against the SFT model on that family's prompts alone (swapped, 0.75 would read 0.25), and
    each model's standard error is the spread of its own scores: sample standard deviation over √n."""
    records = [{"prompt": f"q{i}", "reference": "Tarsk.", "family": family}
               for i, family in enumerate(["facts", "facts", "count", "count"])]
    sft = ["Tarsk.", "I do not know.", "Tarsk.", "Tarsk."]
    after = ["Tarsk.", "Tarsk.", "Tarsk.", "I do not know."]  # facts: a tie and a win; count: a tie and a loss
    assert compare_answers(records, after, sft)["win_rate_by_family"] == {"count": 0.25, "facts": 0.75}
    right, wrong = gold_score(records[0], "Tarsk."), gold_score(records[0], "I do not know.")
    mean = (3 * right + wrong) / 4  # the SFT model's scores: three right answers, one wrong
    stderr = math.sqrt((3 * (right - mean) ** 2 + (wrong - mean) ** 2) / 3) / math.sqrt(4)
    summary = comparison_summary(compare_answers(records, ["Tarsk."] * 4, sft))  # always right: no spread
    assert summary["gold_sft_stderr"] == pytest.approx(stderr) and summary["gold_after_stderr"] == 0.0
    # each prompt's reference stays beside its prompt
    records = [{"prompt": "Capital of Varn?", "reference": "Tarsk."}, {"prompt": "2 + 2?", "reference": "4"}]
    summary = comparison_summary(compare_answers(records, ["Tarsk.", "4"], ["Mell.", "5"]))
    assert [(row["prompt"], row["reference"]) for row in summary["examples"]] == [
        ("Capital of Varn?", "Tarsk."), ("2 + 2?", "4")]


def test_policies_are_compared_on_every_test_split_and_never_on_training_prompts():
    """The instruction suite's held-out records are "test_seen", "test_heldout_family", ...: every
    split but "train" is held out, and a record without a split is a training one."""
    records = [{"prompt": "a", "split": "train"}, {"prompt": "b", "split": "test_seen"}, {"prompt": "c"},
               {"prompt": "d", "split": "test_heldout_family"}, {"prompt": "e", "split": "test"}]
    assert sorted(r["prompt"] for r in preferences.heldout_records(records, 10)) == ["b", "d", "e"]
    assert len(preferences.heldout_records(records, 2)) == 2
    # in one fixed order, seed 0's, whatever the run's seed: the journey's held-out figures were drawn with it
    assert [r["prompt"] for r in preferences.heldout_records(records, 3)] == ["e", "b", "d"]


def test_collecting_rankings_and_comparing_policies_count_their_answers_in_a_progress_bar(
        untrained_runs, tmp_path, capsys):
    """At tiny, the reward step samples ~2,800 answers to rank, and each RL step answers 200 held-out
    prompts with the policy and the SFT model after its last training step: half a minute to a minute
    each, in which nothing on the terminal moved. Each now counts its answers in a named bar."""
    records = [{"id": f"r{i}", "prompt": f"What is {i} plus {i}?", "reference": str(2 * i), "family": "sums",
                "split": "train" if i < 8 else "test_seen"} for i in range(11)]
    collect_rankings(RewardConfig(n_prompts=5, max_new_tokens=4), untrained_runs / "gpt", records,
                     tmp_path / "prefs.jsonl")
    policy, tokenizer = load_model_and_tokenizer(untrained_runs / "gpt", GPT)
    compare_policies(policy, policy, tokenizer, records[8:], 1.0, 4, name="ppo")
    shown = capsys.readouterr().err
    assert re.search(r"answers to rank \(0/5 rankings\): 100%.*\b28/28 ", shown), shown  # 7 prompts x 4
    for model in ("ppo", "SFT model"):
        assert re.search(rf"held-out answers, {model}: 100%.*\b3/3 ", shown), (model, shown)
