"""The OpenAI-compatible client against a local HTTP server: retries, cache, and the LLM pair."""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from monosemantic.analyses.autointerp import AutoInterpConfig, run_autointerp
from monosemantic.analyses.explain import Evidence, Example
from monosemantic.analyses.llm import ChatClient, LLMConfig, LLMError, LLMExplainer, LLMSimulator, parse_simulation
from monosemantic.analyses.scoring import spearman
from monosemantic.features import db
from monosemantic.paths import RunLayout


class FakeChat:
    """A chat endpoint that fails with the queued status codes first, then answers via `reply`."""

    def __init__(self, failures=(), reply=lambda body: "ok"):
        self.failures = list(failures)
        self.reply = reply
        self.requests = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append((self.path, self.headers.get("Authorization"), body))
                if fake.failures:
                    code = fake.failures.pop(0)
                    self.send_response(code)
                    if code == 429:
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    return
                out = json.dumps({"choices": [{"message": {"role": "assistant", "content": fake.reply(body)}}]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(out.encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self):
        self.server.shutdown()


@pytest.fixture
def chat():
    servers = []

    def make(**kw):
        servers.append(FakeChat(**kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


MSG = [{"role": "user", "content": "hi"}]


def test_retries_on_500_and_429_then_caches(chat, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_KEY", "sekret")
    server = chat(failures=[500, 429, 503])
    sleeps = []
    cfg = LLMConfig(base_url=server.url, model="m", api_key_env="TEST_KEY", backoff_s=0.5)
    client = ChatClient(cfg, cache_dir=tmp_path / "cache", sleep=sleeps.append)
    assert client.complete(MSG) == "ok"
    assert len(server.requests) == 4
    assert sleeps == [0.5, 0.0, 2.0]  # exponential backoff; Retry-After: 0 wins for the 429
    path, auth, body = server.requests[-1]
    assert path == "/v1/chat/completions" and auth == "Bearer sekret" and body["model"] == "m"
    # Cached on disk: a new client (another process) sends nothing.
    again = ChatClient(cfg, cache_dir=tmp_path / "cache", sleep=sleeps.append)
    assert again.complete(MSG) == "ok" and len(server.requests) == 4
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 1
    # Another request is not a cache hit.
    assert again.complete([{"role": "user", "content": "other"}]) == "ok" and len(server.requests) == 5


def test_gives_up_and_does_not_retry_client_errors(chat):
    server = chat(failures=[500] * 10)
    client = ChatClient(LLMConfig(base_url=server.url, max_retries=2), sleep=lambda s: None)
    with pytest.raises(LLMError, match="gave up after 3 attempts"):
        client.complete(MSG)
    bad = chat(failures=[401])
    with pytest.raises(LLMError, match="HTTP 401"):
        ChatClient(LLMConfig(base_url=bad.url), sleep=lambda s: None).complete(MSG)
    assert len(bad.requests) == 1


def test_complete_many_keeps_order(chat):
    server = chat(reply=lambda body: body["messages"][0]["content"].upper())
    client = ChatClient(LLMConfig(base_url=server.url, concurrency=3))
    batch = [[{"role": "user", "content": w}] for w in ["a", "b", "c", "d", "e"]]
    assert client.complete_many(batch) == ["A", "B", "C", "D", "E"]


def test_llm_explainer_and_simulator_round_trip(chat):
    def reply(body):
        system = body["messages"][0]["content"]
        if "Explain" in system:
            assert '" whale":9' in body["messages"][1]["content"]  # activations quantised 0-9
            return "thinking... <answer>the word whale</answer>"
        windows = [json.loads(line.split(": ", 1)[1]) for line in body["messages"][1]["content"].splitlines()[2:]]
        return "\n".join(f"{i}: " + " ".join("9" if t == " whale" else "0" for t in w) for i, w in enumerate(windows))

    client = ChatClient(LLMConfig(base_url=chat(reply=reply).url))
    ev = Evidence([Example(["the", " whale"], [0.0, 3.0])])
    explanation = LLMExplainer(client).explain(ev)
    assert explanation == "the word whale"
    test = [Example(["a", " whale", "b"], [0.0, 2.0, 0.0]), Example([" sea", "c"], [0.0, 0.0])]
    pred = LLMSimulator(client).simulate(explanation, [e.tokens for e in test])
    assert pred == [[0.0, 9.0, 0.0], [0.0, 0.0]]
    flat = lambda xs: [a for x in xs for a in x]  # noqa: E731
    assert spearman(flat(pred), flat([e.acts for e in test])) == pytest.approx(1.0)


def test_parse_simulation_zero_fills_bad_lines():
    assert parse_simulation("0: 1 2\n1: 5\nnoise", [2, 3, 1]) == [[1.0, 2.0], [0.0, 0.0, 0.0], [0.0]]


class FakeClient:
    """A chat client that answers from the prompt itself, without any endpoint: the explainer names the
    tokens shown at level 9, the simulator predicts 9 on those tokens. Keeps every prompt."""

    def __init__(self):
        self.cfg = LLMConfig(concurrency=2)
        self.explain_prompts, self.simulate_prompts = [], []

    def complete(self, messages):
        system, user = messages[0]["content"], messages[1]["content"]
        if "Explain" in system:
            self.explain_prompts.append(user)
            words = sorted(set(re.findall(r'("(?:[^"\\]|\\.)*"):9', user)))
            return f"<answer>the tokens {' '.join(words)}</answer>"
        self.simulate_prompts.append(user)
        words = set(re.findall(r'"(?:[^"\\]|\\.)*"', user.splitlines()[0]))
        lines = [json.loads(line.split(": ", 1)[1]) for line in user.splitlines()[2:]]
        return "\n".join(
            f"{i}: " + " ".join("9" if json.dumps(t) in words else "0" for t in w) for i, w in enumerate(lines)
        )


def test_llm_pair_runs_the_same_protocol_without_a_network(tmp_path):
    # Feature f fires on word f; every example comes from its own context, marked by a token "<ctx N>"
    # beside the word, so the prompts show which contexts each side read.
    conn = db.create(tmp_path / "f.sqlite")
    words = [" whale", " sea", " ship"]
    did = db.add_dictionary(conn, name="sae", model="A", hook="h", kind="sae", n_features=3, n_tokens=1000)
    feats, exs = [], []
    for f, word in enumerate(words):
        feats.append({"dictionary_id": did, "feature": f, "density": 0.01, "n_active": 10, "max_act": 5.0})
        for rank in range(12):
            ctx = 100 * f + rank
            tokens = ["a"] * 6 + [f"<ctx {ctx}>", word] + ["b"] * 7
            acts = [0.0] * 7 + [5.0] + [0.0] * 7
            exs.append({"dictionary_id": did, "feature": f, "kind": "top", "interval": None, "rank": rank,
                        "ctx_offset": ctx, "ctx_pos": 7, "src": "x", "max_act": 5.0, "max_index": 7,
                        "tokens_json": tokens, "acts_json": acts})  # fmt: skip
    db.insert_rows(conn, "features", feats)
    db.insert_rows(conn, "examples", exs)
    client = FakeClient()
    cfg = AutoInterpConfig(explainer="llm", max_features=2, pool_contexts=0)
    summary = run_autointerp(
        conn, RunLayout(tmp_path), cfg, progress=False, pair=(LLMExplainer(client), LLMSimulator(client))
    )
    (row,) = summary["dictionaries"]
    assert row["n_explained"] == 3 and row["n_scored"] == 2 and row["median"] == pytest.approx(1.0)
    assert summary["explainer"] == "llm/llm" and len(client.explain_prompts) == 3 and len(client.simulate_prompts) == 2
    seen = lambda prompts: {c for p in prompts for c in re.findall(r"<ctx (\d+)>", p)}  # noqa: E731
    assert seen(client.explain_prompts) and seen(client.simulate_prompts)
    assert seen(client.explain_prompts).isdisjoint(seen(client.simulate_prompts))  # no context on both sides
    scores = [r[0] for r in conn.execute("SELECT score FROM features WHERE score IS NOT NULL")]
    assert len(scores) == 2 and all(s == pytest.approx(1.0) for s in scores)
