// Turns a rendered manifest (overlays/podman) into what podman 4.3's
// `kube play` runs as a cluster would, and prints it:
//
//   node podman-play.mjs RENDERED.yaml [COMPONENT] > PLAY.yaml
//   podman kube play --network NET PLAY.yaml
//
// Three differences found by trying, each undone here and nowhere else:
//  - $(VAR) in command and args is passed through literally: it is expanded
//    here from env and envFrom ConfigMaps, as the kubelet does;
//  - every containerPort is published on the host's port of the same number
//    even without hostPort (two shards on 7000 collide, and the host's own
//    9400 may be taken): ports are dropped; pods talk over the podman network
//    by pod name, which needs no published port;
//  - an emptyDir becomes a podman volume named after the volume alone, so
//    every pod's `dataset` is one volume, each init container copying into it
//    while another pod reads (a worker saw a truncated file): each emptyDir
//    is renamed <pod>-<volume>, as private as a pod's emptyDir is.
// With COMPONENT (e.g. shard), only the ConfigMaps and the Pods labelled
// app.kubernetes.io/component=COMPONENT are kept: test-k8s.sh plays the
// shards again on the volumes their PersistentVolumeClaims made the first
// time.
// A reference to a variable that is not defined fails here (the validator
// refuses it too).
import { readFileSync } from "node:fs";
import { parseAllDocuments, stringify } from "yaml";
import { envOf, expand } from "./validate.mjs";

const [file, component] = process.argv.slice(2);
if (!file) {
  console.error("usage: node podman-play.mjs RENDERED.yaml [COMPONENT]");
  process.exit(2);
}
const docs = parseAllDocuments(readFileSync(file, "utf8")).map((d) => d.toJS()).filter(Boolean)
  .filter((d) => !component || d.kind === "ConfigMap" ||
    (d.kind === "Pod" && d.metadata?.labels?.["app.kubernetes.io/component"] === component));
const configMaps = new Map(docs.filter((d) => d.kind === "ConfigMap").map((d) => [d.metadata.name, d]));
const missing = [];
for (const d of docs.filter((d) => d.kind === "Pod")) {
  const renamed = new Map();
  for (const v of d.spec.volumes ?? []) {
    if (v.emptyDir !== undefined) {
      renamed.set(v.name, `${d.metadata.name}-${v.name}`);
      v.name = renamed.get(v.name);
    }
  }
  for (const c of [...(d.spec.initContainers ?? []), ...(d.spec.containers ?? [])]) {
    for (const m of c.volumeMounts ?? []) m.name = renamed.get(m.name) ?? m.name;
    const env = envOf(c, configMaps);
    for (const key of ["command", "args"]) {
      if (c[key]) c[key] = c[key].map((a) => expand(a, env, missing));
    }
    delete c.ports;
  }
}
if (missing.length > 0) {
  console.error(`podman-play: undefined variables: ${[...new Set(missing)].join(", ")}`);
  process.exit(1);
}
process.stdout.write(docs.map((d) => stringify(d)).join("---\n"));
