"""Writes llm_replies.json: for each corpus file, the replies a model gave (written by hand as a model would answer)."""
import json
from pathlib import Path

here = Path(__file__).resolve().parent / "repair_corpus"
FIX = {
    "hardcoded_gene_count": ("the gene count is hard-coded to 2000; read it from info",
                             [('N_GENES = 2000\n\n\n', ''), ('h = 64\n', 'g, h = info["n_genes"], 64\n'),
                              ("N_GENES", "g")]),
    "concat_width_forgotten": ("the first layer gets [x_ctrl, z], so it takes g + h inputs",
                               [("nn.Linear(g, h), nn.ReLU()", "nn.Linear(g + h, h), nn.ReLU()")]),
    "pert_encoder_sized_by_genes": ("the mask has n_perts columns, not n_genes",
                                    [('self.pert = nn.Linear(g, h)', 'self.pert = nn.Linear(info["n_perts"], h)')]),
    "head_outputs_perts": ("the head must output one value per gene", [("self.head = nn.Linear(h, p)", "self.head = nn.Linear(h, g)")]),
    "builder_misnamed": ("the contract's entry point is build_model", [("def make_model(info)", "def build_model(info)")]),
    "builder_missing": ("add build_model(info) constructing ShiftModel from info",
                        [("EOF", '\n\ndef build_model(info):\n    return ShiftModel(info["n_genes"], info["n_perts"])\n')]),
    "relu_misspelt": ("nn.Relu does not exist; the class is nn.ReLU", [("nn.Relu()", "nn.ReLU()")]),
    "functional_not_imported": ("F is never imported", [("import torch.nn as nn\n", "import torch.nn as nn\nimport torch.nn.functional as F\n")]),
    "info_key_guessed": ("the key is n_genes", [('info["num_genes"]', 'info["n_genes"]')]),
    "hparam_assumed": ("hidden is not always set; default it", [('info["hparams"]["hidden"]', 'info["hparams"].get("hidden", 64)')]),
    "float64_buffer": ("the numpy prior is float64; store it as float32", [("np.eye(g) * 0.5)", "np.eye(g) * 0.5).float()")]),
    "cuda_hardcoded": ("create the noise on the input's device", [('device="cuda"', "device=z.device")]),
    "log_of_zero": ("log(0) is -inf; use log1p", [("torch.log(x_ctrl)", "torch.log1p(x_ctrl)")]),
    "pert_dict_as_tensor": ("pert is a dict; encode mask * dose", [("self.pert(pert)", 'self.pert(pert["mask"] * pert["dose"])')]),
    "super_init_forgotten": ("call nn.Module.__init__ before assigning layers",
                             [('    def __init__(self, info):\n', '    def __init__(self, info):\n        super().__init__()\n')]),
    "forward_returns_tuple": ("the harness needs a tensor; return only the prediction", [(", dim=-1)), z\n", ", dim=-1))\n")]),
    "reshape_hardcoded": ("the (8, 16) grid holds 128 values but the width is 64; use (8, 8)", [("hid.view(-1, 8, 16)", "hid.view(-1, 8, 8)")]),
    "loss_signature_wrong": ("the harness calls loss(x_ctrl, pert, x_target); compute the prediction inside",
                             [("    def loss(self, pred, target):\n        return torch.mean((pred - target) ** 2)",
                               "    def loss(self, x_ctrl, pert, x_target):\n        return torch.mean((self(x_ctrl, pert) - x_target) ** 2)")]),
    "embedding_of_mask": ("the mask is multi-hot, not indices: weight the embedding table by mask * dose",
                          [('self.pert(pert["mask"]).sum(1)', '(pert["mask"] * pert["dose"]) @ self.pert.weight')]),
}
# replies that a model got wrong first: the loop must reject or re-run them
FIRST_WRONG = {
    "reshape_hardcoded": "THOUGHT: the view is wrong; reshape with numpy instead\n```python\nimport os\n{code}```\n",
    "forward_returns_tuple": "THOUGHT: train longer\n```json\n{{\"epochs\": 50}}\n```\n",
}
out = {}
for name, (thought, edits) in FIX.items():
    code = (here / f"{name}.py").read_text()
    fixed = code.split("\n", 1)[1]  # drop the corpus header line
    for old, new in edits:
        if old == "EOF":
            fixed = fixed.rstrip("\n") + "\n" + new
            continue
        assert old in fixed, (name, old)
        fixed = fixed.replace(old, new)
    replies = []
    if name in FIRST_WRONG:
        replies.append(FIRST_WRONG[name].format(code=fixed))
    replies.append(f"THOUGHT: {thought}\n```python\n{fixed}```\n")
    out[name] = replies
(here / "llm_replies.json").write_text(json.dumps(out, indent=1) + "\n")
print(len(out))
