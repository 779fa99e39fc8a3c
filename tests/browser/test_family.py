"""Feature families (paper §8.11): the tree builder on hand-made splits tables, and the pages that show it."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from monosemantic.browser import queries
from monosemantic.browser.app import create_app
from monosemantic.browser.family import Link, family_tree, nodes_of
from monosemantic.browser.synthetic import build_synthetic_db
from monosemantic.features import db
from tests.browser.conftest import LOCAL

# dictionaries 1 < 2 < 3 (sizes); (d, f) -> (d, f) with the masked activation cosine
TABLE = [
    Link((1, 0), (2, 0), 0.9),
    Link((1, 0), (2, 1), 0.6),
    Link((2, 0), (3, 0), 0.8),
    Link((2, 0), (3, 5), 0.5),
    Link((2, 1), (3, 5), 0.45),  # a child with two parents
    Link((2, 1), (3, 2), 0.7),
    Link((1, 0), (3, 9), 0.95),  # the smallest -> largest shortcut: not a step of the ladder
    Link((1, 4), (2, 7), 0.8),  # another family
]


def lookups(table):
    def parents_of(nodes):
        return [x for x in table if x.child in set(nodes)]

    def children_of(nodes):
        return [x for x in table if x.parent in set(nodes)]

    return parents_of, children_of


def shape(node):
    """(feature id, cosine, focus, repeat, children) of a node, recursively."""
    key = (node["dictionary_id"], node["feature"])
    return key, node["cosine"], node["focus"], node["repeat"], [shape(c) for c in node["children"]]


def test_the_tree_goes_up_to_the_smallest_ancestor_and_down_to_the_largest():
    tree = family_tree([1, 2, 3], (3, 2), *lookups(TABLE))
    assert [shape(r) for r in tree["roots"]] == [
        ((1, 0), None, False, False, [
            ((2, 0), 0.9, False, False, [((3, 0), 0.8, False, False, []), ((3, 5), 0.5, False, False, [])]),
            ((2, 1), 0.6, False, False, [((3, 2), 0.7, True, False, []), ((3, 5), 0.45, False, True, [])]),
        ]),
    ]  # fmt: skip
    line = {(n["dictionary_id"], n["feature"]) for n in nodes_of(tree) if n["line"]}
    assert line == {(3, 2), (2, 1), (1, 0)}  # the focus and its ancestors
    assert tree["n_nodes"] == 6 and tree["truncated"] == 0  # (3, 9) and (1, 4)'s family left out
    # any member of the family gives the same tree, with itself as the focus
    middle = family_tree([1, 2, 3], (2, 0), *lookups(TABLE))
    assert [n["focus"] for n in nodes_of(middle)] == [False, True, False, False, False, False, False]


def test_a_feature_with_parents_in_two_families_has_two_roots():
    table = [Link((1, 0), (2, 0), 0.5), Link((1, 3), (2, 0), 0.7), Link((1, 3), (2, 4), 0.9)]
    tree = family_tree([1, 2], (2, 0), *lookups(table))
    assert [shape(r) for r in tree["roots"]] == [
        ((1, 0), None, False, False, [((2, 0), 0.5, True, False, [])]),
        ((1, 3), None, False, False, [((2, 4), 0.9, False, False, []), ((2, 0), 0.7, True, True, [])]),
    ]


def test_a_root_need_not_be_in_the_smallest_dictionary():
    table = [Link((2, 1), (3, 1), 0.8), Link((1, 0), (2, 0), 0.9)]  # (2, 1) has no parent
    tree = family_tree([1, 2, 3], (3, 1), *lookups(table))
    assert [shape(r) for r in tree["roots"]] == [((2, 1), None, False, False, [((3, 1), 0.8, True, False, [])])]


def test_the_budget_keeps_the_focus_line_and_counts_what_it_leaves_out():
    table = [Link((1, 0), (2, k), 0.9 - k / 100) for k in range(10)]
    table += [Link((2, 9), (3, 0), 0.5), Link((2, 0), (3, 1), 0.6)]
    tree = family_tree([1, 2, 3], (3, 0), *lookups(table), max_nodes=4)
    root = tree["roots"][0]
    kept = [c["feature"] for c in root["children"]]
    assert 9 in kept and len(kept) == 3  # the focus's parent (the weakest link) first, then the strongest two
    assert kept[:2] == [0, 1] and root["more"] == 7
    assert next(c for c in root["children"] if c["feature"] == 0)["more"] == 1  # (3, 1): the budget is spent
    assert tree["truncated"] == 8
    assert next(c for c in root["children"] if c["feature"] == 9)["children"][0]["focus"]
    assert tree["n_nodes"] == 5  # the budget, plus the focus itself (its line is never cut)


def test_no_family_without_a_link_to_a_neighbouring_size():
    assert family_tree([1, 2, 3], (3, 9), *lookups(TABLE)) is None  # only the shortcut
    assert family_tree([1, 2, 3], (2, 3), *lookups(TABLE)) is None  # no link at all
    assert family_tree([1, 2, 3], (7, 0), *lookups(TABLE)) is None  # not in the ladder (the neurons)


def test_the_sqlite_lookups_give_the_same_tree_as_the_table(tmp_path):
    conn = db.create(tmp_path / "f.sqlite")
    for k in (1, 2, 3):
        db.add_dictionary(conn, name=f"s-{8 * 2**k}", model="A", hook="h", kind="sae", n_features=8 * 2**k, n_tokens=1)
    db.insert_rows(conn, "splits", [
        {"parent_dictionary_id": x.parent[0], "parent_feature": x.parent[1], "child_dictionary_id": x.child[0],
         "child_feature": x.child[1], "act_cosine": x.cosine, "dec_cosine": 0.5} for x in TABLE
    ])  # fmt: skip
    conn.commit()
    conn.row_factory = __import__("sqlite3").Row
    assert [x["id"] for x in queries.split_ladder(conn, 3)] == [1, 2, 3]
    got = queries.feature_family(conn, 3, 2)
    want = family_tree([1, 2, 3], (3, 2), *lookups(TABLE))
    assert [shape(r) for r in got["roots"]] == [shape(r) for r in want["roots"]]
    assert {n["name"] for n in nodes_of(got)} == {"s-16", "s-32", "s-64"}
    assert queries.has_splits(conn, 2, 7) and not queries.has_splits(conn, 2, 3)


@pytest.fixture(scope="module")
def ladder_client(tmp_path_factory):
    """A synthetic database with a ladder of three sizes (16 -> 32 -> 64: child c has parent c mod size)."""
    path = build_synthetic_db(tmp_path_factory.mktemp("ladder") / "f.sqlite", n_features=64, sizes=(16, 32, 64))
    client = TestClient(create_app(path), base_url=LOCAL, raise_server_exceptions=False)
    dicts = {(d["model"], d["name"]): d["id"] for d in client.get("/api/").json()["dictionaries"]}
    return client, dicts


def test_the_feature_page_and_its_json_twin_carry_the_family(ladder_client):
    client, dicts = ladder_client
    d16, d32, d64 = (dicts["A", f"tm2023-{n}"] for n in (16, 32, 64))
    fam = client.get(f"/api/dict/{d64}/feature/37").json()["feature"]["family"]
    assert [x["name"] for x in fam["ladder"]] == ["tm2023-16", "tm2023-32", "tm2023-64"]
    (root,) = fam["roots"]
    assert (root["dictionary_id"], root["feature"], root["cosine"]) == (d16, 5, None)
    assert [(c["feature"], sorted(g["feature"] for g in c["children"])) for c in root["children"]] in (
        [(5, [5, 37]), (21, [21, 53])],
        [(21, [21, 53]), (5, [5, 37])],
    )  # ordered by cosine, which the synthetic links draw at random
    focus = [n for n in nodes_of(fam) if n["focus"]]
    assert [(n["dictionary_id"], n["feature"]) for n in focus] == [(d64, 37)]
    assert all(n["explanation"] and n["top_tokens"] and 0.4 < (n["cosine"] or 1) <= 1 for n in nodes_of(fam))

    html = client.get(f"/dict/{d64}/feature/37").text
    section = html[html.index('<section id="family">') :]
    section = section[: section.index("</section>")]
    assert section.count("<li") == 7 and section.count("<ul") == 4  # 1 + 2 + 4 features; the root list + 3
    assert f'<li class="focus"><span class="muted">tm2023-64</span> <a href="/dict/{d64}/feature/37">#37</a>' in section
    assert f'href="/dict/{d16}/feature/5"' in section and "cos " in section
    assert "tm2023-16 → tm2023-32 → tm2023-64" in section


def test_no_family_section_on_a_neuron_page(ladder_client):
    client, dicts = ladder_client
    r = client.get(f"/api/dict/{dicts['A', 'neurons']}/feature/3").json()
    assert r["feature"]["family"] is None
    assert 'id="family"' not in client.get(f"/dict/{dicts['A', 'neurons']}/feature/3").text


def test_the_overview_links_each_case_study_to_its_family(ladder_client):
    client, dicts = ladder_client
    proxies = client.get("/api/").json()["proxies"]
    assert proxies and all(p["has_family"] for p in proxies)  # the synthetic case studies are in the largest size
    html = client.get("/").text
    p = proxies[0]
    assert f'href="/dict/{p["dictionary_id"]}/feature/{p["feature"]}#family"' in html
