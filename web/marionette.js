// Marionette's front-end: shows each node's report (frames without a person, fit errors, saved
// files) in a read-only text box on the node after it runs, so nobody has to read the server log.
import { app } from "../../scripts/app.js";

const REPORT = "marionette_report";

app.registerExtension({
  name: "Marionette.NodeReports",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith("Marionette")) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const text = message?.text;
      if (!text || !text.length) return;
      let widget = this.widgets?.find((w) => w.name === REPORT);
      if (!widget) {
        const made = ComfyWidgets?.STRING
          ? ComfyWidgets.STRING(this, REPORT, ["STRING", { multiline: true }], app)
          : null;
        widget = made?.widget ?? this.addWidget("text", REPORT, "", () => {}, {});
        if (widget.inputEl) {
          widget.inputEl.readOnly = true;
          widget.inputEl.style.opacity = 0.8;
        }
        widget.serialize = false; // a report, not a setting: keeps widgets_values unchanged
      }
      widget.value = Array.isArray(text) ? text.join("\n") : String(text);
      this.setDirtyCanvas?.(true, true);
    };
  },
});

let ComfyWidgets;
import("../../scripts/widgets.js").then((m) => { ComfyWidgets = m.ComfyWidgets; }).catch(() => {});
