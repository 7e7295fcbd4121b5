// The overview: deployments -> clusters -> services with their instances and states, the gateways with their
// ports, the canaries; current through the event stream.
import {ApiError, get, mode} from "./api.js";
import {badge, h, replace} from "./dom.js";
import {keepCurrent} from "./live.js";

const ALL = "?per_page=1000";

export function renderOverview(main) {
  const content = h("div", {id: "overview"});
  const error = h("p", {class: "error", role: "alert"});
  main.append(h("h1", {}, mode === "gateway" ? "Gateways" : "Overview"), error, content);

  async function refresh() {
    try {
      const gateways = await get(`/api/v1/gateways${ALL}`);
      if (mode === "gateway") {
        replace(content, gatewaysSection(gateways));
      } else {
        const [deployments, workflows] = await Promise.all([get(`/api/v1/deployments${ALL}`),
                                                            get(`/api/v1/workflows${ALL}`)]);
        replace(content, deploymentsSection(deployments), gatewaysSection(gateways),
                canariesSection(workflows.filter((workflow) => workflow.workflow === "canary")));
      }
      error.textContent = "";
    } catch (failure) {
      if (failure instanceof ApiError && failure.status !== 401) error.textContent = failure.message;
    }
  }
  return keepCurrent(refresh, {seconds: 5});
}

function deploymentsSection(deployments) {
  return h("section", {"aria-labelledby": "deployments-title"},
    h("h2", {id: "deployments-title"}, "Deployments"),
    deployments.length ? deployments.map(deploymentCard) : h("p", {class: "muted"}, "Nothing is deployed."));
}

function deploymentCard(deployment) {
  return h("article", {class: "card deployment", "data-deployment": deployment.name},
    h("h3", {}, "Deployment ", h("span", {class: "mono"}, deployment.name)),
    Object.entries(deployment.clusters || {}).map(([name, cluster]) =>
      h("div", {class: "cluster", "data-cluster": name},
        h("h4", {}, "Cluster ", h("span", {class: "mono"}, name),
          h("span", {class: "muted"}, portsText(cluster.gateway_ports))),
        h("div", {class: "scroll"}, h("table", {},
          h("thead", {}, h("tr", {}, h("th", {scope: "col"}, "Service"), h("th", {scope: "col"}, "State"),
                                     h("th", {scope: "col"}, "Instances"))),
          h("tbody", {}, (cluster.services || []).map(serviceRow)))))));
}

function portsText(ports) {
  const named = Object.entries(ports || {}).filter(([, port]) => port !== null);
  return named.length ? ` · internal gateway ${named.map(([name, port]) => `${name} :${port}`).join(", ")}` : "";
}

function serviceRow(service) {
  const name = service.breed && service.breed.name ? service.breed.name : "?";
  return h("tr", {"data-service": name},
    h("th", {scope: "row", class: "mono"}, name),
    h("td", {}, badge(service.state), service.reason ? h("div", {class: "muted"}, service.reason) : null),
    h("td", {}, (service.instances || []).length
      ? h("ul", {class: "instances"}, service.instances.map((instance) =>
          h("li", {"data-instance": instance.name},
            h("span", {class: "mono"}, instance.name), " ", badge(instance.state),
            h("span", {class: "muted"}, ` ${instance.host}:${Object.values(instance.ports || {}).join(",")}`,
              instance.restarts ? ` · ${instance.restarts} restarts` : ""))))
      : h("span", {class: "muted"}, "no instances")));
}

function gatewaysSection(gateways) {
  return h("section", {"aria-labelledby": "gateways-title"},
    h("h2", {id: "gateways-title"}, "Gateways"),
    gateways.length ? h("div", {class: "card scroll"}, h("table", {},
      h("thead", {}, h("tr", {}, ["Gateway", "Port", "Routes", "State"].map((title) =>
        h("th", {scope: "col"}, title)))),
      h("tbody", {}, gateways.map((gateway) => h("tr", {"data-gateway": gateway.name},
        h("th", {scope: "row"}, h("a", {href: `#/gateways/${encodeURIComponent(gateway.name)}`,
                                        class: "mono", "data-key": `gateway-${gateway.name}`}, gateway.name)),
        h("td", {class: "mono"}, `${gateway.bind || ""}:${gateway.port}`),
        h("td", {}, Object.keys(gateway.routes || {}).length),
        h("td", {}, badge(gateway.status && gateway.status.state), gateway.generated
          ? h("span", {class: "muted"}, " generated") : null))))))
      : h("p", {class: "muted"}, "No gateways."));
}

function canariesSection(canaries) {
  return h("section", {"aria-labelledby": "canaries-title"},
    h("h2", {id: "canaries-title"}, "Canaries"),
    canaries.length ? h("ul", {class: "card"}, canaries.map((workflow) => h("li", {"data-canary": workflow.name},
      h("a", {href: `#/canaries/${encodeURIComponent(workflow.name)}`, class: "mono",
              "data-key": `canary-${workflow.name}`}, workflow.name), " ",
      badge(workflow.state ? workflow.state.phase : workflow.status),
      h("span", {class: "muted"}, ` gateway ${(workflow.parameters || {}).gateway || "?"}`))))
      : h("p", {class: "muted"}, "No canary workflows."));
}
