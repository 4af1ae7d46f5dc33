// Validates prometheus-operator custom resources (JSON array on stdin) with the schemas that
// @kubernetes-models/prometheus-operator compiles from the operator's CRDs. Usage: node validate.mjs TOOLS_DIR
// Prints one JSON line: [{"name": ..., "errors": [...]}, ...]; exit 0 whatever the findings.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const tools = process.argv[2];
const objects = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const object of objects) {
  const module = join(tools, "node_modules/@kubernetes-models/prometheus-operator", object.apiVersion, `${object.kind}.js`);
  const name = `${object.kind}/${object.metadata?.name}`;
  let model;
  try {
    model = (await import(pathToFileURL(module).href))[object.kind];
  } catch (error) {
    results.push({ name, errors: [`no schema for ${object.apiVersion} ${object.kind}: ${error.message}`] });
    continue;
  }
  try {
    new model(object).validate();
    results.push({ name, errors: [] });
  } catch (error) {
    results.push({ name, errors: [error.message] });
  }
}
process.stdout.write(JSON.stringify(results) + "\n");
