// Expands $(VAR) references in the command and args of every Pod's
// containers, as the kubelet does, and prints the objects again:
//
//   node kubelet-expand.mjs RENDERED.yaml [COMPONENT] > PLAY.yaml
//   podman kube play PLAY.yaml
//
// With COMPONENT (e.g. shard), only the ConfigMaps and the Pods labelled
// app.kubernetes.io/component=COMPONENT are kept: test-k8s.sh plays the
// shards again on the volumes their PersistentVolumeClaims made the first
// time.
// podman 4.3's `kube play` passes "$(PSKIT_SHARDS)" through literally (found
// by trying), and the manifests keep the Kubernetes form. A reference to a
// variable that is not defined fails here (the validator refuses it too).
import { readFileSync } from "node:fs";
import { parseAllDocuments, stringify } from "yaml";
import { envOf, expand } from "./validate.mjs";

const [file, component] = process.argv.slice(2);
if (!file) {
  console.error("usage: node kubelet-expand.mjs RENDERED.yaml [COMPONENT]");
  process.exit(2);
}
const docs = parseAllDocuments(readFileSync(file, "utf8")).map((d) => d.toJS()).filter(Boolean)
  .filter((d) => !component || d.kind === "ConfigMap" ||
    (d.kind === "Pod" && d.metadata?.labels?.["app.kubernetes.io/component"] === component));
const configMaps = new Map(docs.filter((d) => d.kind === "ConfigMap").map((d) => [d.metadata.name, d]));
const missing = [];
for (const d of docs.filter((d) => d.kind === "Pod")) {
  for (const c of [...(d.spec.initContainers ?? []), ...(d.spec.containers ?? [])]) {
    const env = envOf(c, configMaps);
    for (const key of ["command", "args"]) {
      if (c[key]) c[key] = c[key].map((a) => expand(a, env, missing));
    }
  }
}
if (missing.length > 0) {
  console.error(`kubelet-expand: undefined variables: ${[...new Set(missing)].join(", ")}`);
  process.exit(1);
}
process.stdout.write(docs.map((d) => stringify(d)).join("---\n"));
