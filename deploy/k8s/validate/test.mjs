// Tests of the validator (node --test test.mjs; scripts/check-deploy.sh runs
// them): every overlay renders (kubectl kustomize) and is valid, and each
// kind of mistake, injected into a rendering, is refused with a message that
// names it. The misspelled `imagee:` passes the JSON schemas (they allow
// unknown fields) and must be caught by the strict layer.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments, stringify } from "yaml";
import { checkSchemas, checkUnknownFields, checkPskitRules, loadDocs, validateFiles } from "./validate.mjs";

const k8s = join(dirname(fileURLToPath(import.meta.url)), "..");
const overlays = ["base", "overlays/gpu", "overlays/monitoring", "overlays/podman"];
const work = mkdtempSync(join(tmpdir(), "pskit-k8s-test-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));

const rendered = {};
for (const o of overlays) {
  rendered[o] = execFileSync("kubectl", ["kustomize", join(k8s, o)], { encoding: "utf8" });
}

function write(name, text) {
  const path = join(work, name);
  writeFileSync(path, text);
  return path;
}

// The rendering of `overlay` as objects, changed by `mutate`, as a file.
function mutated(overlay, mutate) {
  const docs = parseAllDocuments(rendered[overlay]).map((d) => d.toJS()).filter(Boolean);
  mutate(docs);
  return write(`mutated-${Math.random().toString(36).slice(2)}.yaml`, docs.map((d) => stringify(d)).join("---\n"));
}
const find = (docs, kind, name) => docs.find((d) => d.kind === kind && d.metadata.name.endsWith(name));
const container = (pod, name) => [...(pod.initContainers ?? []), ...pod.containers].find((c) => c.name === name);

function rulesOf(path) {
  return checkPskitRules(loadDocs([path]).items);
}
function expectRule(errors, pattern) {
  assert.ok(errors.some((e) => pattern.test(e)),
    `expected a problem matching ${pattern}, got:\n${errors.join("\n") || "(none)"}`);
}

for (const o of overlays) {
  test(`${o} renders and is valid`, async () => {
    const { items, errors } = await validateFiles([write(`${o.replace("/", "-")}.yaml`, rendered[o])]);
    assert.ok(items.length > 0);
    assert.deepEqual(errors, []);
  });
}

test("a misspelled imagee: passes the JSON schemas but fails the strict check", async () => {
  // Render, inject the typo into the first container, expect failure.
  const path = write("imagee.yaml", rendered.base.replace(/^(\s*)image:/m, "$1imagee:"));
  const { items } = loadDocs([path]);
  assert.deepEqual(await checkSchemas(items), [], "the schemas alone accept unknown fields");
  const strict = checkUnknownFields(items);
  expectRule(strict, /strict: .*'"imagee"' does not exist in type 'IContainer'/);
  const { errors } = await validateFiles([path]);
  assert.ok(errors.length > 0);
  // And the same through the command line: exit status 1.
  assert.throws(() => execFileSync(process.execPath, [join(k8s, "validate/validate.mjs"), path], { stdio: "pipe" }),
    (e) => e.status === 1 && /imagee/.test(e.stderr.toString()));
});

test("a misspelled PodMonitor field fails the strict check", () => {
  const path = mutated("overlays/monitoring", (docs) => {
    const ep = find(docs, "PodMonitor", "pskit-server").spec.podMetricsEndpoints[0];
    ep.portt = ep.port;
    delete ep.port;
  });
  expectRule(checkUnknownFields(loadDocs([path]).items), /'"portt"' does not exist/);
});

test("a wrong type fails the schema check", async () => {
  const path = mutated("base", (docs) => { find(docs, "StatefulSet", "pskit-shard").spec.replicas = "two"; });
  expectRule(await checkSchemas(loadDocs([path]).items), /schema: .*replicas/);
});

test("PSKIT_WORLD_SIZE must equal the Job's completions", () => {
  const path = mutated("base", (docs) => { find(docs, "Job", "pskit-worker").spec.completions = 3; });
  expectRule(rulesOf(path), /PSKIT_WORLD_SIZE is 2, spec.completions is 3/);
});

test("--num_shards and --shards must agree with the StatefulSet's replicas", () => {
  const path = mutated("base", (docs) => { find(docs, "StatefulSet", "pskit-shard").spec.replicas = 3; });
  const errors = rulesOf(path);
  expectRule(errors, /--num_shards is 2, there are 3 shards/);
  expectRule(errors, /--shards lists 2 shards, there are 3/);
});

test("probes must be native gRPC probes on the gRPC port", () => {
  const path = mutated("base", (docs) => {
    const c = container(find(docs, "StatefulSet", "pskit-shard").spec.template.spec, "ps-server");
    c.readinessProbe.grpc.port = 9400;
    c.livenessProbe = { tcpSocket: { port: 7000 } };
  });
  const errors = rulesOf(path);
  expectRule(errors, /readinessProbe asks port 9400, the gRPC port is 7000/);
  expectRule(errors, /livenessProbe must be a native grpc: probe/);
});

test("the grace period must exceed the shutdown grace plus the final checkpoint", () => {
  const path = mutated("base", (docs) => {
    find(docs, "StatefulSet", "pskit-shard").spec.template.spec.terminationGracePeriodSeconds = 30;
  });
  expectRule(rulesOf(path), /terminationGracePeriodSeconds 30 must exceed --shutdown_grace_s 15 \+ checkpoint 30 s/);
});

test("GPUs only in limits, and cuda only with a GPU", () => {
  const path = mutated("overlays/gpu", (docs) => {
    const c = container(find(docs, "Job", "pskit-worker").spec.template.spec, "ps-worker");
    delete c.resources.limits["nvidia.com/gpu"];
    c.resources.requests["nvidia.com/gpu"] = 1;
  });
  const errors = rulesOf(path);
  expectRule(errors, /nvidia.com\/gpu must be set in limits/);
  expectRule(errors, /--backend cuda without an nvidia.com\/gpu limit/);
});

test("selectors must match the pod templates", () => {
  const path = mutated("overlays/monitoring", (docs) => {
    find(docs, "PodDisruptionBudget", "pskit-shard").spec.selector.matchLabels["app.kubernetes.io/component"] = "shards";
    find(docs, "Service", "pskit-shard").spec.selector["app.kubernetes.io/name"] = "psk1t";
    find(docs, "PodMonitor", "pskit-server").spec.podMetricsEndpoints[0].port = "metric";
  });
  const errors = rulesOf(path);
  expectRule(errors, /PodDisruptionBudget pskit-shard: spec.selector matches no pod template/);
  expectRule(errors, /Service pskit-shard: spec.selector matches no pod template/);
  expectRule(errors, /PodMonitor pskit-server: port metric is no container port/);
});

test("the evaluator's account must be allowed to scale exactly the shard StatefulSet", () => {
  const path = mutated("base", (docs) => {
    find(docs, "Role", "pskit-stop-shards").rules[0].resourceNames = ["pskit-shards"];
  });
  expectRule(rulesOf(path), /not bound to a Role with get\+patch on statefulsets\/scale pskit-shard/);
});

test("a $(VAR) that no env or ConfigMap defines is refused", () => {
  const path = mutated("base", (docs) => {
    container(find(docs, "Job", "pskit-worker").spec.template.spec, "ps-worker").args.push("--tau=$(PSKIT_TAUU)");
  });
  expectRule(rulesOf(path), /\$\(PSKIT_TAUU\) is not in its env/);
});

test("containers run as the image's non-root user without privileges", () => {
  const path = mutated("overlays/podman", (docs) => {
    const pod = find(docs, "Pod", "pskit-worker-0").spec;
    pod.securityContext.runAsUser = 0;
    delete container(pod, "ps-worker").securityContext.capabilities;
  });
  const errors = rulesOf(path);
  expectRule(errors, /runAsUser must be 10001/);
  expectRule(errors, /capabilities.drop must include ALL/);
});

test("the stop-shards container's kubectl command parses (it gets as far as the API server)", () => {
  // No API server here: an address nothing listens on (local port 9) makes
  // kubectl stop at the connection, after it has parsed every flag; a
  // misspelled flag or subresource would stop it earlier with a usage error.
  const docs = parseAllDocuments(rendered.base).map((d) => d.toJS()).filter(Boolean);
  const stop = container(find(docs, "Job", "pskit-evaluator").spec.template.spec, "stop-shards");
  const [binary, ...args] = [...stop.command, ...stop.args];
  assert.equal(binary, "kubectl");
  let stderr = "";
  try {
    execFileSync("kubectl", ["--server=http://127.0.0.1:9", "--request-timeout=2s", ...args], { stdio: "pipe" });
  } catch (e) {
    stderr = e.stderr.toString();
  }
  assert.match(stderr, /connection to the server 127\.0\.0\.1:9 was refused/);
  assert.doesNotMatch(stderr, /unknown flag|usage|invalid/i);
});
