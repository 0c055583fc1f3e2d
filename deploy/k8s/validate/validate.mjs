// Offline, strict validation of rendered pskit manifests (no API server).
//
//   node deploy/k8s/validate/validate.mjs RENDERED.yaml...   # exit 0 valid, 1 not
//
// Three layers, each of which fails the run:
//  1. Schema: every object is checked by kubernetes-models' JSON-schema
//     validators (Kubernetes' OpenAPI; the Prometheus Operator's CRDs for
//     PodMonitor): required fields, types, enums, formats. A kind with no
//     schema here is an error, not a pass.
//  2. Strict fields: those schemas, like the API server's, accept unknown
//     fields (a misspelled `imagee:` passes them). So every object is also
//     type-checked as an object literal against the same packages' TypeScript
//     types, whose excess-property check rejects any field the type does not
//     declare, at any depth ("'imagee' does not exist in type 'IContainer'").
//  3. pskit's own rules (checkPskitRules below): probes on the gRPC port,
//     grace period, GPUs in limits, selectors that match, world size =
//     completions, shard list = replicas, the stop-the-shards RBAC, security
//     context, $(VAR) references.
//
// The packages are pinned in package-lock.json; run `npm ci` here first
// (scripts/check-deploy.sh does).
import { readFileSync, writeFileSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { createRequire } from "node:module";
import { parseAllDocuments } from "yaml";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

// apiVersion -> module prefix of the model classes and types.
function modelModule(apiVersion, kind) {
  if (apiVersion === "monitoring.coreos.com/v1") {
    return `@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/${kind}`;
  }
  return `kubernetes-models/${apiVersion}/${kind}`;
}

function describe(doc) {
  const ns = doc?.metadata?.namespace ? `${doc.metadata.namespace}/` : "";
  return `${doc?.kind ?? "?"} ${ns}${doc?.metadata?.name ?? "?"}`;
}

// Reads multi-document YAML files into [{file, doc}]; YAML errors are errors.
export function loadDocs(files) {
  const out = [];
  const errors = [];
  for (const file of files) {
    const text = readFileSync(file, "utf8");
    for (const d of parseAllDocuments(text)) {
      if (d.errors.length > 0) {
        errors.push(`${file}: YAML: ${d.errors.map((e) => e.message).join("; ")}`);
        continue;
      }
      const doc = d.toJS();
      if (doc !== null && doc !== undefined) out.push({ file, doc });
    }
  }
  return { items: out, errors };
}

// Layer 1: the JSON-schema validators.
export async function checkSchemas(items) {
  const errors = [];
  for (const { file, doc } of items) {
    if (typeof doc?.apiVersion !== "string" || typeof doc?.kind !== "string") {
      errors.push(`${file}: ${describe(doc)}: no apiVersion/kind`);
      continue;
    }
    let mod;
    try {
      mod = await import(modelModule(doc.apiVersion, doc.kind));
    } catch {
      errors.push(`${file}: ${describe(doc)}: no schema for ${doc.apiVersion} ${doc.kind}`);
      continue;
    }
    const Model = mod[doc.kind];
    try {
      new Model(doc).validate();
    } catch (e) {
      errors.push(`${file}: ${describe(doc)}: schema: ${e.message}`);
    }
  }
  return errors;
}

// Layer 2: unknown fields, by TypeScript's excess-property check. One
// generated file, one object per line; diagnostics map back by line.
export function checkUnknownFields(items) {
  const ts = require("typescript");
  const lines = [];
  const owner = [];  // line index -> item
  const imports = new Map();
  items.forEach((item, i) => {
    const { doc } = item;
    if (typeof doc?.apiVersion !== "string" || typeof doc?.kind !== "string") return;
    const mod = modelModule(doc.apiVersion, doc.kind);
    try {
      require.resolve(mod);
    } catch {
      return;  // layer 1 reports kinds without a schema
    }
    const alias = `T${imports.size}`;
    if (!imports.has(mod)) imports.set(mod, alias);
    owner[lines.length] = item;
    lines.push(`export const o${i}: ${imports.get(mod)} = ${JSON.stringify(doc)};`);
  });
  const header = [...imports].map(
    ([mod, alias]) => `import type { I${mod.split("/").pop()} as ${alias} } from "${mod}";`);
  const source = [...header, ...lines].join("\n") + "\n";
  const path = join(here, `.strict-check-${process.pid}.ts`);
  writeFileSync(path, source);
  const errors = [];
  try {
    const program = ts.createProgram([path], {
      noEmit: true, strict: true, skipLibCheck: true,
      module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext,
      target: ts.ScriptTarget.ES2022,
    });
    for (const d of ts.getPreEmitDiagnostics(program)) {
      const message = ts.flattenDiagnosticMessageText(d.messageText, "\n").split("\n")[0]
        .replace(/type '\{[^']*\}'/, "its type");
      if (d.file && d.start !== undefined) {
        const { line } = d.file.getLineAndCharacterOfPosition(d.start);
        const item = owner[line - header.length];
        if (item) {
          errors.push(`${item.file}: ${describe(item.doc)}: strict: ${message}`);
          continue;
        }
      }
      errors.push(`strict check: ${message}`);
    }
  } finally {
    rmSync(path, { force: true });
  }
  return errors;
}

// ---- Layer 3: pskit's rules. -------------------------------------------

const SHARD_BINARY = "ps-server";
const WORKER_BINARY = "ps-worker";
const IMAGE_UID = 10001;  // the pskit image's user (docker/Dockerfile)

// The pod spec and where it sits, for the kinds that hold one.
function podSpecOf(doc) {
  switch (doc?.kind) {
    case "Pod": return { meta: doc.metadata ?? {}, spec: doc.spec ?? {} };
    case "Deployment": case "StatefulSet": case "Job": case "DaemonSet": case "ReplicaSet":
      return { meta: doc.spec?.template?.metadata ?? {}, spec: doc.spec?.template?.spec ?? {} };
    default: return null;
  }
}

function allContainers(spec) {
  return [...(spec.initContainers ?? []), ...(spec.containers ?? [])];
}

// What a container runs: its command + args, with the image's ENTRYPOINT
// (tini) left implicit.
function argv(c) {
  return [...(c.command ?? []), ...(c.args ?? [])];
}
function runs(c, binary) {
  const a = argv(c);
  return a.length > 0 && a[0].split("/").pop() === binary;
}

// The container's environment: env values and the keys of envFrom'd
// ConfigMaps (from the same rendered set).
export function envOf(c, configMaps) {
  const env = new Map();
  for (const from of c.envFrom ?? []) {
    const cm = configMaps.get(from.configMapRef?.name);
    if (cm) for (const [k, v] of Object.entries(cm.data ?? {})) env.set(`${from.prefix ?? ""}${k}`, v);
  }
  for (const e of c.env ?? []) {
    env.set(e.name, e.value !== undefined ? String(e.value) : { valueFrom: e.valueFrom });
  }
  return env;
}

// Expands $(VAR) as the kubelet does; unknown references are reported.
export function expand(s, env, missing) {
  return String(s).replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, name) => {
    if (!env.has(name)) {
      missing.push(name);
      return m;
    }
    const v = env.get(name);
    return typeof v === "string" ? v : `<${name} from the downward API>`;
  });
}

// --flag=value / --flag value from an expanded argv.
function flag(args, name) {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === `--${name}`) return args[i + 1];
    if (args[i].startsWith(`--${name}=`)) return args[i].slice(name.length + 3);
  }
  return undefined;
}

function selectorMatches(selector, labels) {
  if (!selector) return false;
  const ml = selector.matchLabels ?? {};
  const me = selector.matchExpressions ?? [];
  if (Object.keys(ml).length === 0 && me.length === 0) return false;  // selects all: refuse
  for (const [k, v] of Object.entries(ml)) if (labels?.[k] !== v) return false;
  for (const e of me) {
    const has = labels && Object.hasOwn(labels, e.key);
    const v = labels?.[e.key];
    if (e.operator === "In" && !(has && e.values.includes(v))) return false;
    if (e.operator === "NotIn" && has && e.values.includes(v)) return false;
    if (e.operator === "Exists" && !has) return false;
    if (e.operator === "DoesNotExist" && has) return false;
  }
  return true;
}

const isGpuResource = (name) => /(^|\.)(nvidia|amd)\.com\/gpu$/.test(name);

export function checkPskitRules(items) {
  const errors = [];
  const docs = items.map((i) => i.doc);
  const where = (doc) => `${items.find((i) => i.doc === doc)?.file ?? "?"}: ${describe(doc)}`;
  const fail = (doc, msg) => errors.push(`${where(doc)}: ${msg}`);

  const configMaps = new Map(docs.filter((d) => d?.kind === "ConfigMap")
    .map((d) => [d.metadata?.name, d]));
  const workloads = docs.map((d) => ({ doc: d, pod: podSpecOf(d) })).filter((w) => w.pod);

  // Per container: expanded argv; $(VAR) references must resolve.
  const expanded = new Map();
  for (const { doc, pod } of workloads) {
    for (const c of allContainers(pod.spec)) {
      const missing = [];
      const env = envOf(c, configMaps);
      expanded.set(c, argv(c).map((a) => expand(a, env, missing)));
      for (const m of missing) {
        fail(doc, `container ${c.name}: $(${m}) is not in its env or envFrom ConfigMaps`);
      }
      if (!c.image || !/[:@]/.test(c.image.split("/").pop())) {
        fail(doc, `container ${c.name}: image '${c.image}' has no tag (set it with kustomize images:)`);
      }
    }
  }

  // Security context: non-root as the image's user, no privileges.
  for (const { doc, pod } of workloads) {
    const psc = pod.spec.securityContext ?? {};
    if (psc.runAsNonRoot !== true) fail(doc, "securityContext.runAsNonRoot must be true");
    if (psc.runAsUser !== IMAGE_UID) fail(doc, `securityContext.runAsUser must be ${IMAGE_UID} (the image's user)`);
    if (psc.seccompProfile?.type !== "RuntimeDefault") fail(doc, "securityContext.seccompProfile.type must be RuntimeDefault");
    for (const c of allContainers(pod.spec)) {
      const sc = c.securityContext ?? {};
      if (sc.allowPrivilegeEscalation !== false) fail(doc, `container ${c.name}: allowPrivilegeEscalation must be false`);
      if (sc.readOnlyRootFilesystem !== true) fail(doc, `container ${c.name}: readOnlyRootFilesystem must be true`);
      if (!(sc.capabilities?.drop ?? []).includes("ALL")) fail(doc, `container ${c.name}: capabilities.drop must include ALL`);
    }
  }

  // Shards: gRPC probes on the gRPC port; grace > shutdown grace + checkpoint.
  for (const { doc, pod } of workloads) {
    for (const c of allContainers(pod.spec).filter((c) => runs(c, SHARD_BINARY))) {
      const grpcPort = (c.ports ?? []).find((p) => p.name === "grpc")?.containerPort;
      const listen = flag(expanded.get(c), "listen") ?? "";
      if (grpcPort === undefined) fail(doc, `container ${c.name}: no container port named grpc`);
      else if (!listen.endsWith(`:${grpcPort}`)) fail(doc, `container ${c.name}: --listen ${listen} is not on the grpc port ${grpcPort}`);
      for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
        const p = c[probe];
        if (!p) fail(doc, `container ${c.name}: no ${probe}`);
        else if (!p.grpc) fail(doc, `container ${c.name}: ${probe} must be a native grpc: probe`);
        else if (p.grpc.port !== grpcPort) fail(doc, `container ${c.name}: ${probe} asks port ${p.grpc.port}, the gRPC port is ${grpcPort}`);
      }
      const shutdownGrace = Number(flag(expanded.get(c), "shutdown_grace_s") ?? 10);
      const checkpoint = Number(pod.meta.annotations?.["pskit.dev/checkpoint-seconds"]);
      const grace = pod.spec.terminationGracePeriodSeconds ?? 30;
      if (!Number.isFinite(checkpoint)) {
        fail(doc, "pod annotation pskit.dev/checkpoint-seconds (time of the final checkpoint) is missing");
      } else if (!Number.isFinite(shutdownGrace)) {
        fail(doc, `container ${c.name}: --shutdown_grace_s is not a number`);
      } else if (!(grace > shutdownGrace + checkpoint)) {
        fail(doc, `terminationGracePeriodSeconds ${grace} must exceed --shutdown_grace_s ${shutdownGrace} + checkpoint ${checkpoint} s`);
      }
      if (!flag(expanded.get(c), "data_dir")) fail(doc, `container ${c.name}: no --data_dir: a restart would lose the shard`);
    }
  }

  // GPUs: in limits; a request, if any, equals the limit; cuda <-> a GPU.
  for (const { doc, pod } of workloads) {
    for (const c of allContainers(pod.spec)) {
      const limits = c.resources?.limits ?? {};
      const requests = c.resources?.requests ?? {};
      for (const [name, v] of Object.entries(requests)) {
        if (isGpuResource(name) && String(limits[name]) !== String(v)) {
          fail(doc, `container ${c.name}: ${name} must be set in limits (a request, if given, must equal the limit)`);
        }
      }
      const gpus = Object.entries(limits).filter(([n]) => isGpuResource(n));
      const backend = flag(expanded.get(c), "backend");
      if (runs(c, WORKER_BINARY) && gpus.length > 0 && backend !== "cuda") {
        fail(doc, `container ${c.name}: has a GPU limit but --backend is ${backend ?? "auto"}, not cuda`);
      }
      if (backend === "cuda" && gpus.length === 0) {
        fail(doc, `container ${c.name}: --backend cuda without an nvidia.com/gpu limit`);
      }
    }
  }

  // Selectors select the pods they are for.
  for (const w of workloads) {
    if (["StatefulSet", "Deployment", "DaemonSet", "ReplicaSet"].includes(w.doc.kind) &&
        !selectorMatches(w.doc.spec?.selector, w.pod.meta.labels)) {
      fail(w.doc, "spec.selector does not match the pod template's labels");
    }
  }
  const podsMatching = (sel) => workloads.filter((w) => selectorMatches(sel, w.pod.meta.labels));
  for (const d of docs.filter((d) => d?.kind === "Service")) {
    const targets = podsMatching({ matchLabels: d.spec?.selector ?? {} });
    if (targets.length === 0) fail(d, "spec.selector matches no pod template");
    for (const p of d.spec?.ports ?? []) {
      if (typeof p.targetPort === "string" &&
          !targets.some((w) => allContainers(w.pod.spec).some((c) => (c.ports ?? []).some((cp) => cp.name === p.targetPort)))) {
        fail(d, `port ${p.name}: targetPort ${p.targetPort} is no container port of the selected pods`);
      }
    }
  }
  for (const d of docs.filter((d) => d?.kind === "PodDisruptionBudget")) {
    if (podsMatching(d.spec?.selector).length === 0) fail(d, "spec.selector matches no pod template");
  }
  for (const d of docs.filter((d) => d?.kind === "PodMonitor")) {
    const targets = podsMatching(d.spec?.selector);
    if (targets.length === 0) fail(d, "spec.selector matches no pod template");
    for (const ep of d.spec?.podMetricsEndpoints ?? []) {
      for (const w of targets) {
        const ports = allContainers(w.pod.spec).flatMap((c) => c.ports ?? []);
        if (!ports.some((p) => p.name === ep.port)) fail(d, `port ${ep.port} is no container port of ${describe(w.doc)}`);
      }
    }
  }

  // Shards: --num_shards and the workers' --shards agree with the shard count.
  const shardSets = docs.filter((d) => d?.kind === "StatefulSet" &&
    allContainers(podSpecOf(d).spec).some((c) => runs(c, SHARD_BINARY)));
  const shardPods = docs.filter((d) => d?.kind === "Pod" &&
    allContainers(d.spec ?? {}).some((c) => runs(c, SHARD_BINARY)));
  let shardCount;
  let shardNames = null;
  if (shardSets.length === 1) {
    const s = shardSets[0];
    shardCount = s.spec?.replicas ?? 1;
    const svc = docs.find((d) => d?.kind === "Service" && d.metadata?.name === s.spec?.serviceName);
    if (!svc) fail(s, `serviceName ${s.spec?.serviceName} names no Service`);
    else if (svc.spec?.clusterIP !== "None") fail(svc, "the shards' Service must be headless (clusterIP: None) for per-pod DNS names");
    const port = svc?.spec?.ports?.find((p) => p.name === "grpc")?.port;
    shardNames = [...Array(shardCount).keys()].map((i) => `${s.metadata.name}-${i}.${s.spec?.serviceName}:${port}`);
  } else if (shardSets.length > 1) {
    fail(shardSets[1], "more than one shard StatefulSet");
  } else if (shardPods.length > 0) {
    shardCount = shardPods.length;
    const indexes = shardPods.map((p) => Number(flag(expanded.get(
      allContainers(p.spec).find((c) => runs(c, SHARD_BINARY))), "shard_index"))).sort();
    if (indexes.join() !== [...Array(shardCount).keys()].join()) {
      fail(shardPods[0], `shard pods have --shard_index ${indexes.join(",")}, not 0..${shardCount - 1}`);
    }
    // Pods are found by name (podman's DNS), in shard-index order.
    shardNames = [...shardPods].sort((a, b) => Number(flag(expanded.get(allContainers(a.spec)
      .find((c) => runs(c, SHARD_BINARY))), "shard_index")) - Number(flag(expanded.get(allContainers(b.spec)
      .find((c) => runs(c, SHARD_BINARY))), "shard_index")))
      .map((p) => `${p.metadata.name}:${(allContainers(p.spec).flatMap((c) => c.ports ?? [])
        .find((cp) => cp.name === "grpc"))?.containerPort}`);
  }
  if (shardCount !== undefined) {
    for (const { doc, pod } of workloads) {
      for (const c of allContainers(pod.spec)) {
        const a = expanded.get(c);
        if (runs(c, SHARD_BINARY)) {
          const n = Number(flag(a, "num_shards"));
          if (n !== shardCount) fail(doc, `--num_shards is ${flag(a, "num_shards")}, there are ${shardCount} shards`);
        }
        if (runs(c, WORKER_BINARY)) {
          const list = (flag(a, "shards") ?? "").split(",").filter(Boolean);
          if (list.length !== shardCount) {
            fail(doc, `container ${c.name}: --shards lists ${list.length} shards, there are ${shardCount}`);
          } else if (shardNames && list.join() !== shardNames.join()) {
            fail(doc, `container ${c.name}: --shards is ${list.join()}, the shards are ${shardNames.join()}`);
          }
        }
      }
    }
  }

  // Workers: world size = completions = parallelism in an Indexed Job.
  for (const d of docs.filter((d) => d?.kind === "Job")) {
    for (const c of podSpecOf(d).spec.containers ?? []) {
      if (!runs(c, WORKER_BINARY) || flag(expanded.get(c), "role") === "evaluator") continue;
      const completions = d.spec?.completions;
      if (d.spec?.completionMode !== "Indexed") fail(d, "a Job of workers must be completionMode: Indexed (the rank is JOB_COMPLETION_INDEX)");
      const world = envOf(c, configMaps).get("PSKIT_WORLD_SIZE");
      if (String(world) !== String(completions)) {
        fail(d, `container ${c.name}: PSKIT_WORLD_SIZE is ${world}, spec.completions is ${completions}`);
      }
      if ((d.spec?.parallelism ?? 1) !== completions) {
        fail(d, `spec.parallelism ${d.spec?.parallelism ?? 1} != completions ${completions}: every rank must run at once`);
      }
    }
  }

  // Ending the job: after the evaluator, a container scales the shard
  // StatefulSet to 0, with exactly the RBAC that needs.
  if (shardSets.length === 1) {
    const sts = shardSets[0].metadata.name;
    const evalJobs = docs.filter((d) => d?.kind === "Job" && allContainers(podSpecOf(d).spec)
      .some((c) => runs(c, WORKER_BINARY) && flag(expanded.get(c), "role") === "evaluator"));
    if (evalJobs.length === 0) fail(shardSets[0], "no evaluator Job: nothing ends the job");
    for (const j of evalJobs) {
      const spec = podSpecOf(j).spec;
      const evaluatorIsInit = (spec.initContainers ?? []).some((c) => flag(expanded.get(c), "role") === "evaluator");
      const stop = (spec.containers ?? []).find((c) => {
        const a = expanded.get(c);
        return a[0] === "kubectl" && a.includes("patch") && a.includes(sts) && a.includes("--subresource=scale") &&
          a.some((x) => x.replace(/\s/g, "").includes('"replicas":0'));
      });
      if (!evaluatorIsInit || !stop) {
        fail(j, `the evaluator must be an init container followed by 'kubectl patch statefulset ${sts} --subresource=scale' to 0 replicas`);
        continue;
      }
      const sa = spec.serviceAccountName;
      const bindings = docs.filter((d) => d?.kind === "RoleBinding" &&
        (d.subjects ?? []).some((s) => s.kind === "ServiceAccount" && s.name === sa));
      const granted = bindings.some((b) => {
        const role = docs.find((d) => d?.kind === b.roleRef?.kind && d.metadata?.name === b.roleRef?.name);
        return (role?.rules ?? []).some((r) => (r.apiGroups ?? []).includes("apps") &&
          (r.resources ?? []).includes("statefulsets/scale") && (r.resourceNames ?? []).includes(sts) &&
          ["get", "patch"].every((v) => (r.verbs ?? []).includes(v)));
      });
      if (!sa || !docs.some((d) => d?.kind === "ServiceAccount" && d.metadata?.name === sa)) {
        fail(j, `serviceAccountName ${sa} names no ServiceAccount`);
      } else if (!granted) {
        fail(j, `ServiceAccount ${sa} is not bound to a Role with get+patch on statefulsets/scale ${sts}`);
      }
    }
  }
  return errors;
}

export async function validateFiles(files) {
  const { items, errors } = loadDocs(files);
  errors.push(...await checkSchemas(items));
  errors.push(...checkUnknownFields(items));
  // Each file is one rendering (one overlay): pskit's rules hold within it.
  for (const file of files) errors.push(...checkPskitRules(items.filter((i) => i.file === file)));
  return { items, errors };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const files = process.argv.slice(2);
  if (files.length === 0) {
    console.error("usage: node validate.mjs RENDERED.yaml... (the output of kubectl kustomize)");
    process.exit(2);
  }
  const { items, errors } = await validateFiles(files);
  if (items.length === 0) errors.push(`no objects in ${files.join(" ")}: nothing rendered?`);
  for (const e of errors) console.error(`invalid: ${e}`);
  if (errors.length > 0) {
    console.error(`validate: ${errors.length} problem(s) in ${items.length} objects`);
    process.exit(1);
  }
  console.log(`validate: ${items.length} objects valid (schema, strict fields, pskit rules) in ${files.join(" ")}`);
}
