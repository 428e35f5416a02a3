#!/usr/bin/env python3
"""End-to-end tests of the built q3n as a user runs it. `q3n batch, on the bf16_tied random-weight fixture:
batch outputs equal `q3n run` outputs, a killed job resumes without redoing finished requests,
SIGINT leaves a valid file, a torn last line is redone, every bad line becomes an error record,
and OpenAI batch-file lines are accepted. A checkpoint whose router weight holds a NaN ends
`q3n run` and `q3n batch` with an error naming the layer. `q3n bench` samples its decode tests as
asked.

Usage: batch_cli_test.py PATH/TO/q3n   (CTest passes the built binary)
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

Q3N = None
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "tests", "data", "fixtures", "bf16_tied")
VOCAB = 320
CTX = 1024


def ids_of(seed, n):
    """Deterministic pseudo-random token ids (below the fixture's stop token 317)."""
    x, out = seed * 2654435761 % 2**32, []
    for _ in range(n):
        x = (1103515245 * x + 12345) % 2**31
        out.append(x % 300)
    return out


def read_records(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


class BatchCli(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.tmp = self.dir.name

    def tearDown(self):
        self.dir.cleanup()

    def path(self, name):
        return os.path.join(self.tmp, name)

    def write_input(self, lines, name="in.jsonl"):
        with open(self.path(name), "w", encoding="utf-8") as f:
            for line in lines:
                f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
        return self.path(name)

    def batch_cmd(self, inp, out, *extra):
        return [Q3N, "batch", "-m", MODEL, "--input", inp, "--output", out, "--ctx", str(CTX), "--ids", *extra]

    def batch(self, inp, out, *extra):
        return subprocess.run(self.batch_cmd(inp, out, *extra), capture_output=True, text=True, timeout=900)

    def run_ids(self, prompt_ids, n, *extra):
        ids_file = self.path("prompt_ids.txt")
        with open(ids_file, "w") as f:
            f.write(" ".join(map(str, prompt_ids)))
        r = subprocess.run([Q3N, "run", "-m", MODEL, "--prompt-ids", ids_file, "-n", str(n), "--ctx", str(CTX),
                            "--print-ids", *extra], capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        return [int(t) for t in r.stdout.split()]

    def test_greedy_and_seeded_outputs_equal_single_runs(self):
        # Very different prompt lengths: one token to more than one 512-token prefill chunk.
        lengths = [1, 700, 9, 130, 2, 513, 47, 260, 31]
        lines = [{"custom_id": f"r{i}", "prompt_ids": ids_of(i, n), "max_tokens": 6 + i % 4, "temperature": 0}
                 for i, n in enumerate(lengths)]
        lines.append({"custom_id": "sampled", "prompt_ids": ids_of(99, 20), "max_tokens": 8,
                      "temperature": 0.9, "top_k": 50, "seed": 1234})
        out = self.path("out.jsonl")
        r = self.batch(self.write_input(lines), out, "--max-batch", "3")
        self.assertEqual(r.returncode, 0, r.stderr)
        got = {rec["custom_id"]: rec for rec in read_records(out)}
        self.assertEqual(len(got), len(lines))
        for line in lines:
            rec = got[line["custom_id"]]
            extra = ["--temp", "0"] if line["temperature"] == 0 else ["--temp", "0.9", "--top-k", "50", "--seed", "1234"]
            want = self.run_ids(line["prompt_ids"], line["max_tokens"], *extra)
            self.assertEqual(rec["token_ids"], want, line["custom_id"])
            self.assertEqual(rec["usage"]["completion_tokens"], len(want))
            self.assertEqual(rec["usage"]["prompt_tokens"], len(line["prompt_ids"]))

    def long_job(self, requests=14):
        lines = [{"custom_id": f"job{i}", "prompt_ids": ids_of(500 + i, 5 + 17 * i), "max_tokens": 24, "temperature": 0}
                 for i in range(requests)]
        return self.write_input(lines, "job.jsonl"), lines

    def wait_for_records(self, proc, out, count):
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            if os.path.exists(out):
                with open(out) as f:
                    if sum(1 for _ in f) >= count:
                        return
            time.sleep(0.05)
        self.fail("the job never wrote enough records")

    def test_killed_job_resumes_without_recomputing(self):
        inp, lines = self.long_job()
        reference = self.path("reference.jsonl")
        self.assertEqual(self.batch(inp, reference, "--max-batch", "2").returncode, 0)
        out = self.path("out.jsonl")
        proc = subprocess.Popen(self.batch_cmd(inp, out, "--max-batch", "2"), stderr=subprocess.DEVNULL)
        self.wait_for_records(proc, out, 3)
        proc.kill()  # a crash: no chance to clean up
        proc.wait()
        before = len(read_records(out))
        self.assertLess(before, len(lines), "the job finished before it could be killed")
        r = self.batch(inp, out, "--max-batch", "2")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"{len(lines) - before} requests computed, {before} skipped", r.stderr)
        final = read_records(out)
        self.assertEqual(len(final), len(lines))
        self.assertEqual(sorted(json.dumps(x, sort_keys=True) for x in final),
                         sorted(json.dumps(x, sort_keys=True) for x in read_records(reference)))

    def test_sigint_stops_cleanly_and_resume_finishes(self):
        inp, lines = self.long_job()
        out = self.path("out.jsonl")
        proc = subprocess.Popen(self.batch_cmd(inp, out, "--max-batch", "2"), stderr=subprocess.PIPE, text=True)
        self.wait_for_records(proc, out, 2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=600)
        self.assertEqual(proc.returncode, 130, err)
        self.assertIn("interrupted", err)
        partial = read_records(out)  # every line whole
        self.assertLess(len(partial), len(lines))
        r = self.batch(inp, out, "--max-batch", "2")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(sorted(x["custom_id"] for x in read_records(out)), sorted(x["custom_id"] for x in lines))

    def test_torn_last_line_is_dropped_and_redone(self):
        lines = [{"custom_id": f"t{i}", "prompt_ids": ids_of(i, 10 + i), "max_tokens": 4, "temperature": 0} for i in range(3)]
        inp, out = self.write_input(lines), self.path("out.jsonl")
        self.assertEqual(self.batch(inp, out).returncode, 0)
        with open(out, encoding="utf-8") as f:
            full = f.read().splitlines(keepends=True)
        with open(out, "w", encoding="utf-8") as f:
            f.write("".join(full[:2]) + full[2][: len(full[2]) // 2])  # the last record half written
        r = self.batch(inp, out)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("torn line", r.stderr)
        self.assertIn("1 requests computed, 2 skipped", r.stderr)
        self.assertEqual(sorted(json.dumps(x, sort_keys=True) for x in read_records(out)),
                         sorted(json.dumps(json.loads(x), sort_keys=True) for x in full))

    def test_bad_lines_become_error_records(self):
        bad = [
            ("not json at all", "not valid JSON"),
            ('["a", "list"]', "must be a JSON object"),
            ({"prompt_ids": [1, 2]}, "missing \"custom_id\""),
            ({"custom_id": {"x": 1}, "prompt_ids": [1]}, "\"custom_id\" must be a string"),
            ({"custom_id": "e1", "prompt": ""}, "the prompt is empty"),
            ({"custom_id": "e2"}, "no prompt"),
            ({"custom_id": "e3", "prompt": "hi", "prompt_ids": [1]}, "only one of"),
            ({"custom_id": "e4", "prompt_ids": [1], "temperature": "hot"}, "\"temperature\" must be a number"),
            ({"custom_id": "e5", "prompt_ids": [1], "max_tokens": -3}, "\"max_tokens\" must not be negative"),
            ({"custom_id": "e6", "prompt_ids": [1], "top_p": 0}, "\"top_p\" must be in"),
            ({"custom_id": "e7", "prompt_ids": [1], "min_p": 1.5}, "\"min_p\" must be in"),
            ({"custom_id": "e8", "prompt_ids": [1], "stop": 5}, "\"stop\" must be"),
            ({"custom_id": "e9", "prompt_ids": [1], "n": 2}, "only one completion"),
            ({"custom_id": "e10", "prompt_ids": ids_of(3, CTX + 5)}, "need more than the context"),
            ({"custom_id": "e11", "prompt_ids": [1, VOCAB + 7]}, "outside the vocabulary"),
            ({"custom_id": "e12", "prompt_ids": [1, -2]}, "non-negative integer token ids"),
            ({"custom_id": "e13", "method": "POST", "url": "/v1/embeddings", "body": {"prompt": "x"}}, "\"url\" must be"),
            ({"custom_id": "e14", "messages": [{"role": "robot", "content": "x"}]}, "role \"robot\""),
            ({"custom_id": "ok", "prompt_ids": [1, 2, 3], "max_tokens": 2}, None),
            ({"custom_id": "ok", "prompt_ids": [4], "max_tokens": 2}, "duplicate custom_id"),
        ]
        inp, out = self.write_input([b for b, _ in bad]), self.path("out.jsonl")
        r = self.batch(inp, out)
        self.assertEqual(r.returncode, 3, r.stderr)  # some requests failed
        records = read_records(out)
        self.assertEqual(len(records), len(bad))  # one output line per input line
        by_line = {rec["line"]: rec for rec in records if "error" in rec}
        for number, (_, message) in enumerate(bad, start=1):
            if message is None:
                continue
            self.assertIn(number, by_line, message)
            self.assertIn(message, by_line[number]["error"]["message"])
        self.assertEqual([rec["custom_id"] for rec in records if "error" not in rec], ["ok"])
        # A rerun finds everything done, computes nothing, and still reports the failures.
        r = self.batch(inp, out)
        self.assertEqual(r.returncode, 3)
        self.assertIn("0 requests computed", r.stderr)
        self.assertEqual(len(read_records(out)), len(bad))

    def test_context_defaults_to_the_longest_request(self):
        # No --ctx: the context is what the longest request needs (here past the 4096 default), and
        # a request beyond the model's max_position_embeddings (bf16_tied: 4096) is an error record.
        for model, need, ok in ((os.path.join(ROOT, "tests", "data", "fixtures", "long_context"), 4100, True),
                                (MODEL, 4100, False)):
            lines = [{"custom_id": "long", "prompt_ids": ids_of(5, need - 4), "max_tokens": 4, "temperature": 0},
                     {"custom_id": "short", "prompt_ids": ids_of(6, 10), "max_tokens": 4, "temperature": 0}]
            out = self.path(f"out{int(ok)}.jsonl")
            r = subprocess.run([Q3N, "batch", "-m", model, "--input", self.write_input(lines), "--output", out,
                                "--ids"], capture_output=True, text=True, timeout=900)
            records = {rec["custom_id"]: rec for rec in read_records(out)}
            self.assertIn("finish_reason", records["short"])
            if ok:
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertIn(f"context: {need} positions per sequence", r.stderr)
                self.assertEqual(len(records["long"]["token_ids"]), 4)
            else:
                self.assertEqual(r.returncode, 3, r.stderr)
                self.assertIn("max_position_embeddings", records["long"]["error"]["message"])

    def test_mpi_ranks_give_the_single_process_output_and_resume(self):
        mpirun = shutil.which("mpirun")
        if os.environ.get("Q3N_TEST_MPI") == "0":
            self.skipTest("Q3N_TEST_MPI=0 (the sanitizer build)")
        if not mpirun:
            self.skipTest("no mpirun (Open MPI: scripts/setup.sh installs it)")
        lines = [{"custom_id": f"m{i}", "prompt_ids": ids_of(40 + i, 5 + 37 * i), "max_tokens": 5, "temperature": 0}
                 for i in range(7)]
        lines.insert(3, "not json")  # an error record, owned by one rank
        inp = self.write_input(lines)
        single = self.path("single.jsonl")
        r = self.batch(inp, single)
        self.assertEqual(r.returncode, 3, r.stderr)
        env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                   OMPI_MCA_btl_vader_single_copy_mechanism="none", OMPI_MCA_rmaps_base_oversubscribe="1")
        ranked = self.path("ranked.jsonl")
        r = subprocess.run([mpirun, "-np", "2", *self.batch_cmd(inp, ranked)], capture_output=True, text=True,
                           timeout=900, env=env)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("rank 1 of 2", r.stderr)
        by_key = lambda recs: {rec.get("custom_id") or rec.get("line"): rec for rec in recs}
        self.assertEqual(by_key(read_records(ranked)), by_key(read_records(single)))
        self.assertEqual(len(read_records(ranked)), len(lines))
        self.assertEqual([n for n in os.listdir(self.tmp) if ".rank-" in n], [])
        # A split job stopped before its merge, resumed as one process: the parts count as done.
        done = [json.dumps(rec) for rec in read_records(single) if rec.get("custom_id") in ("m0", "m1", "m2")]
        with open(self.path("resumed.jsonl"), "w") as f:
            f.write("\n".join(done[:2]) + "\n")
        with open(self.path("resumed.jsonl.rank-1"), "w") as f:
            f.write(done[2] + "\n")
        r = self.batch(inp, self.path("resumed.jsonl"))
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("4 requests computed", r.stderr)
        self.assertEqual(by_key(read_records(self.path("resumed.jsonl"))), by_key(read_records(single)))
        self.assertFalse(os.path.exists(self.path("resumed.jsonl.rank-1")))

    def test_devices_split_gives_the_one_device_outputs(self):
        # --devices 0,0: two VkDevices on one physical device with the layers split between them
        # (issue 16's CI test of the pipeline split); the records must be the one-device records.
        lines = [{"custom_id": f"s{i}", "prompt_ids": ids_of(70 + i, 3 + 90 * i), "max_tokens": 6, "temperature": 0}
                 for i in range(4)]
        lines.append({"custom_id": "sampled", "prompt_ids": ids_of(80, 12), "max_tokens": 6,
                      "temperature": 0.9, "top_k": 50, "seed": 7})
        inp = self.write_input(lines)
        one, two = self.path("one.jsonl"), self.path("two.jsonl")
        r = self.batch(inp, one, "--max-batch", "3")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.batch(inp, two, "--max-batch", "3", "--devices", "0,0", "--split", "1,3")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("layer 0 on device 0", r.stderr)  # bf16_tied has 4 layers: 1 + 3
        self.assertIn("layers 1-3 on device 0", r.stderr)
        by_id = lambda path: {rec["custom_id"]: rec for rec in read_records(path)}
        self.assertEqual(by_id(two), by_id(one))
        r = self.batch(inp, self.path("bad.jsonl"), "--devices", "0,0", "--split", "1,0")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("--split 1,0: '0' is not a positive number", r.stderr)

    def test_devices_split_gives_the_same_logits_on_the_demo_model(self):
        if os.environ.get("Q3N_TEST_DEMO_SPLIT") == "0":
            self.skipTest("Q3N_TEST_DEMO_SPLIT=0 (the sanitizer build)")
        demo = os.path.join(ROOT, "assets", "models", "kjv-demo")
        with open(os.path.join(demo, "heldout.txt"), encoding="utf-8") as f:
            text = f.read()[:700]  # ~170 tokens: three prefill chunks of 64
        with open(self.path("text.txt"), "w", encoding="utf-8") as f:
            f.write(text)
        logits = []
        for name, extra in (("one", []), ("two", ["--devices", "0,0"])):
            out = self.path(name + ".npy")
            r = subprocess.run([Q3N, "eval", "-m", demo, "--text-file", self.path("text.txt"), "--chunk", "64",
                                "--logits-out", out, *extra], capture_output=True, text=True, timeout=600)
            self.assertEqual(r.returncode, 0, r.stderr)
            with open(out, "rb") as f:
                logits.append(f.read())
        self.assertGreater(len(logits[0]), 100000)
        self.assertEqual(logits[1], logits[0], "the split's logits differ from one device's")

    def test_run_mtp_gives_the_plain_tokens_and_refuses_a_checkpoint_without_the_head(self):
        # Speculative decoding with kjv-demo's MTP head: the same ids as plain decoding, greedy
        # and sampled, with the acceptance printed; the fixtures have no mtp.* tensors.
        demo = os.path.join(ROOT, "assets", "models", "kjv-demo")
        for sampling in (["--temp", "0"], ["--temp", "0.8", "--seed", "4"]):
            outs = []
            for extra in ([], ["--mtp"], ["--mtp", "--draft", "3"]):
                r = subprocess.run([Q3N, "run", "-m", demo, "-p", "And God said", "-n", "40", "--print-ids",
                                    *sampling, *extra], capture_output=True, text=True, timeout=300)
                self.assertEqual(r.returncode, 0, r.stderr)
                if extra:
                    self.assertRegex(r.stderr, r"MTP: \d+ steps of \d drafts, [\d.]+% accepted")
                outs.append(r.stdout.split())
            self.assertEqual(len(outs[0]), 40)
            self.assertEqual(outs[1], outs[0])
            self.assertEqual(outs[2], outs[0])
        r = subprocess.run([Q3N, "run", "-m", MODEL, "-p", "hello", "-n", "4", "--mtp"], capture_output=True, text=True,
                           timeout=300)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("has no MTP head (no mtp.* tensors); run without --mtp", r.stderr)
        self.assertEqual(r.stderr.count("\n"), 1, r.stderr)

    def test_run_cpu_dispatch_modes_give_the_same_tokens(self):
        # Lavapipe's inline and threaded dispatch run the same kernels: the same ids, greedy and
        # sampled. auto takes inline for a short prompt and says so on a CPU device; a user's
        # LP_NUM_THREADS wins over the choice.
        prompt = ids_of(7, 5)
        for sampling in (["--temp", "0"], ["--temp", "0.9", "--seed", "3"]):
            runs = [self.run_ids(prompt, 12, *sampling, "--cpu-dispatch", mode) for mode in ("threads", "inline", "auto")]
            self.assertEqual(len(runs[0]), 12)
            self.assertEqual(runs[1], runs[0])
            self.assertEqual(runs[2], runs[0])
        listing = subprocess.run([Q3N, "devices"], capture_output=True, text=True, timeout=120).stdout
        types = [line.split("type: ")[1].split(",")[0] for line in listing.splitlines() if "type: " in line]
        cpu = bool(types) and all(t == "CPU" for t in types)  # otherwise run picks a GPU
        env = {k: v for k, v in os.environ.items() if k != "LP_NUM_THREADS"}
        cmd = [Q3N, "run", "-m", MODEL, "-p", "hello", "-n", "8", "--temp", "0", "--print-ids"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual("dispatches ran inline" in r.stderr, cpu, r.stderr)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**env, "LP_NUM_THREADS": "2"})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("dispatches ran inline", r.stderr)
        r = subprocess.run(cmd + ["--cpu-dispatch", "sideways"], capture_output=True, text=True, timeout=60)
        self.assertNotEqual(r.returncode, 0)

    def test_bench_decode_tests_sample_as_asked(self):
        # `q3n bench` samples its decode tests as the flags ask (greedy without them), says so,
        # and refuses a flag out of range as `q3n run` does. One run: each measures the copy
        # bandwidth, seconds on a CPU driver.
        base = [Q3N, "bench", "-m", MODEL, "-p", "1", "-n", "2", "--reps", "1", "--json"]
        r = subprocess.run(base + ["--temp", "0.7", "--top-k", "20", "--top-p", "0.8"], capture_output=True, text=True,
                           timeout=600)
        self.assertEqual(r.returncode, 0, r.stderr)
        report = json.loads(r.stdout)
        for key, value in {"temperature": 0.7, "top_k": 20, "top_p": 0.8, "min_p": 0.0}.items():
            self.assertAlmostEqual(report["decode_sampling"][key], value, places=6, msg=key)
        self.assertTrue(any(t["test"] == "tg2" and t["tokens_per_second"] > 0 for t in report["tests"]))
        r = subprocess.run(base + ["--top-p", "0"], capture_output=True, text=True, timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("--top-p", r.stderr)

    def test_batch_mtp_gives_the_plain_records(self):
        # q3n batch --mtp with kjv-demo's head: every record equals the plain job's (greedy and
        # sampled requests, four at once, more requests than slots), with the acceptance printed.
        demo = os.path.join(ROOT, "assets", "models", "kjv-demo")
        prompts = ["And God said", "In the beginning", "The LORD is my shepherd", "Blessed are the meek",
                   "And it came to pass", "Thou shalt not"]
        lines = [{"custom_id": f"r{i}", "prompt": p, "max_tokens": 12 + 5 * i,
                  **({"temperature": 0.8, "seed": i} if i % 2 else {"temperature": 0})}
                 for i, p in enumerate(prompts)]
        inp = self.write_input(lines)
        records = []
        for extra in ([], ["--mtp"], ["--mtp", "--draft", "2"]):
            out = self.path(f"out{len(records)}.jsonl")
            r = subprocess.run([Q3N, "batch", "-m", demo, "--input", inp, "--output", out, "--ids",
                                "--max-batch", "4", *extra], capture_output=True, text=True, timeout=600)
            self.assertEqual(r.returncode, 0, r.stderr)
            if extra:
                self.assertRegex(r.stderr, r"MTP: \d+ sequence steps of \d drafts, [\d.]+% accepted")
            records.append(sorted(read_records(out), key=lambda rec: rec["custom_id"]))
        self.assertEqual(len(records[0]), len(prompts))
        self.assertEqual(records[1], records[0])
        self.assertEqual(records[2], records[0])
        r = self.batch(inp, self.path("fixture.jsonl"), "--mtp")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("has no MTP head (no mtp.* tensors); run without --mtp", r.stderr)
        # --draft without --mtp, and more drafts than a verify step carries: refused, not ignored.
        r = subprocess.run([Q3N, "batch", "-m", demo, "--input", inp, "--output", self.path("d.jsonl"), "--draft", "2"],
                           capture_output=True, text=True, timeout=300)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("--draft requires --mtp", r.stderr)
        r = subprocess.run([Q3N, "batch", "-m", demo, "--input", inp, "--output", self.path("d.jsonl"), "--mtp",
                            "--draft", "7", "--decode-rows", "4"], capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("--draft 7 needs verify steps of 8 rows", r.stderr)
        self.assertIn("use --draft 3 or less", r.stderr)
        self.assertFalse(os.path.exists(self.path("d.jsonl")) and os.path.getsize(self.path("d.jsonl")) > 0)

    def test_openai_batch_lines(self):
        prompt = "the quick brown fox"
        lines = [
            {"custom_id": "plain", "prompt": prompt, "max_tokens": 5, "temperature": 0},
            {"custom_id": "completions", "method": "POST", "url": "/v1/completions",
             "body": {"model": "q3n", "prompt": prompt, "max_tokens": 5, "temperature": 0}},
            {"custom_id": "chat", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "q3n", "messages": [{"role": "user", "content": prompt}], "max_tokens": 5, "temperature": 0}},
            {"custom_id": "plain-chat", "messages": [{"role": "user", "content": prompt}], "max_tokens": 5, "temperature": 0},
        ]
        out = self.path("out.jsonl")
        r = self.batch(self.write_input(lines), out)
        self.assertEqual(r.returncode, 0, r.stderr)
        got = {rec["custom_id"]: rec for rec in read_records(out)}
        self.assertEqual(got["plain"]["token_ids"], got["completions"]["token_ids"])
        self.assertEqual(got["chat"]["token_ids"], got["plain-chat"]["token_ids"])
        self.assertGreater(got["chat"]["usage"]["prompt_tokens"], got["plain"]["usage"]["prompt_tokens"])  # ChatML around it
        r = subprocess.run([Q3N, "run", "-m", MODEL, "-p", prompt, "-n", "5", "--temp", "0", "--ctx", str(CTX), "--chat"],
                           capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(got["chat"]["text"], r.stdout[:-1])  # run ends its text with a newline


class SharedCaches(unittest.TestCase):
    def test_two_processes_share_the_pipeline_cache(self):
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, XDG_CACHE_HOME=cache)
            cmd = [Q3N, "run", "-m", MODEL, "-p", "hello", "-n", "3", "--temp", "0"]
            procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
            outs = [p.communicate(timeout=300) for p in procs]
            for p, (out, err) in zip(procs, outs):
                self.assertEqual(p.returncode, 0, err)
            self.assertEqual(outs[0][0], outs[1][0])
            names = [n for _, _, files in os.walk(cache) for n in files]
            self.assertTrue(any(n.endswith(".bin") or "pipeline" in n for n in names), names)
            self.assertFalse(any(".tmp" in n for n in names), names)  # no temporary file left behind
            again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)  # the cache loads
            self.assertEqual(again.returncode, 0, again.stderr)
            self.assertEqual(again.stdout, outs[0][0])


    def test_two_processes_share_the_weight_cache_and_a_torn_entry_is_rebuilt(self):
        with tempfile.TemporaryDirectory() as cache:
            cmd = [Q3N, "run", "-m", MODEL, "-p", "hello", "-n", "3", "--temp", "0", "--weights", "q8", "--cache", cache]
            procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
            outs = [p.communicate(timeout=300) for p in procs]
            for p, (out, err) in zip(procs, outs):
                self.assertEqual(p.returncode, 0, err)
            self.assertEqual(outs[0][0], outs[1][0])
            names = os.listdir(cache)
            self.assertEqual(len([n for n in names if n.endswith(".q3nw")]), 1, names)
            self.assertFalse(any(".tmp" in n for n in names), names)  # no temporary file left behind
            again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            self.assertEqual(again.returncode, 0, again.stderr)
            self.assertIn("weights read from cache", again.stderr)
            self.assertEqual(again.stdout, outs[0][0])
            entry = os.path.join(cache, [n for n in names if n.endswith(".q3nw")][0])
            os.truncate(entry, os.path.getsize(entry) - 100)  # a torn copy
            torn = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            self.assertEqual(torn.returncode, 0, torn.stderr)
            self.assertIn("is truncated or has trailing bytes", torn.stderr)
            self.assertIn("rebuilding it", torn.stderr)
            self.assertEqual(torn.stdout, outs[0][0])
            healed = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            self.assertIn("weights read from cache", healed.stderr)


class CorruptWeights(unittest.TestCase):
    """A NaN in one weight: in layer 1's router every route of that layer sees NaN logits; in the
    final norm every logit is NaN."""

    def setUp(self):
        import shutil
        self.dir = tempfile.TemporaryDirectory()
        self.model = os.path.join(self.dir.name, "model")
        shutil.copytree(MODEL, self.model)

    def corrupt(self, tensor):
        import struct
        path = os.path.join(self.model, "model.safetensors")
        with open(path, "r+b") as f:
            size = struct.unpack("<Q", f.read(8))[0]
            entry = json.loads(f.read(size))[tensor]
            self.assertEqual(entry["dtype"], "BF16")
            f.seek(8 + size + entry["data_offsets"][0] + 2 * 5)  # its sixth value
            f.write(struct.pack("<H", 0x7FC0))  # a bf16 quiet NaN

    def tearDown(self):
        self.dir.cleanup()

    def test_nan_logits_stop_run_with_an_error(self):
        self.corrupt("model.norm.weight")
        r = subprocess.run([Q3N, "run", "-m", self.model, "-p", "hello", "-n", "4"], capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("the model produced NaN logits", r.stderr)

    def test_run_stops_with_an_error_naming_the_layer(self):
        self.corrupt("model.layers.1.mlp.gate.weight")
        r = subprocess.run([Q3N, "run", "-m", self.model, "-p", "hello", "-n", "4"], capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("layer 1: the MoE router produced NaN", r.stderr)

    def test_batch_stops_with_the_same_error(self):
        self.corrupt("model.layers.1.mlp.gate.weight")
        inp, out = os.path.join(self.dir.name, "in.jsonl"), os.path.join(self.dir.name, "out.jsonl")
        with open(inp, "w") as f:
            f.write(json.dumps({"custom_id": "a", "prompt": "hello", "max_tokens": 3}) + "\n")
        r = subprocess.run([Q3N, "batch", "-m", self.model, "--input", inp, "--output", out], capture_output=True, text=True,
                           timeout=300)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("layer 1: the MoE router produced NaN", r.stderr)


def load_tests(loader, tests, pattern):
    """Q3N_TEST_SHARD=i/n keeps every n-th test (by name) from the i-th: ctest runs the parts beside
    each other (the sanitizer build's run of this file is CI's longest test)."""
    shard = os.environ.get("Q3N_TEST_SHARD")
    if not shard:
        return tests

    def flatten(suite):
        for t in suite:
            yield from (flatten(t) if isinstance(t, unittest.TestSuite) else [t])

    index, count = (int(v) for v in shard.split("/"))
    ordered = sorted(flatten(tests), key=lambda t: t.id())
    return unittest.TestSuite(t for k, t in enumerate(ordered) if k % count == index)


if __name__ == "__main__":
    Q3N = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
