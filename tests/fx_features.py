"""A torch.fx feature extractor addressed by module path, standing in for torchvision's
`create_feature_extractor` where torchvision is not installed (timm's fx feature path,
`timm.models.FeatureGraphNet`, calls it; torchvision's is pure torch.fx as well).

`create_feature_extractor(model, return_nodes)` traces `model` with torch.fx, takes as the output of
module path `p` the last graph node created inside `p` (or by the leaf module `p`), and returns a
GraphModule computing `{name: output}` for the requested paths. `install(timm)` points timm's
extractor at it unless a real torchvision provides one.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Union

import torch
import torch.fx
import torch.nn as nn


class ModulePathTracer(torch.fx.Tracer):
    """torch.fx tracer recording, for every node, the path of the module whose forward created it."""

    def __init__(self, leaf_modules=(), **kwargs):
        super().__init__(**kwargs)
        self.leaf_types = tuple(leaf_modules)
        self.module_path = ""
        self.node_scope: Dict[torch.fx.Node, str] = {}

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, self.leaf_types) or super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        outer, self.module_path = self.module_path, self.path_of_module(m)
        try:
            return super().call_module(m, forward, args, kwargs)
        finally:
            self.module_path = outer

    def create_proxy(self, kind, target, args, kwargs, *rest, **kw):
        proxy = super().create_proxy(kind, target, args, kwargs, *rest, **kw)
        self.node_scope[proxy.node] = self.module_path
        return proxy


def create_feature_extractor(model: nn.Module, return_nodes: Union[List[str], Dict[str, str]],
                             tracer_kwargs: Optional[dict] = None) -> torch.fx.GraphModule:
    """GraphModule returning `{out_name: output of module path}` (`return_nodes`: paths, or {path: out_name})."""
    names = {p: p for p in return_nodes} if isinstance(return_nodes, (list, tuple)) else dict(return_nodes)
    kwargs = dict(tracer_kwargs or {})
    kwargs.pop("param_shapes_constant", None)
    tracer = ModulePathTracer(**kwargs)
    graph = tracer.trace(model)
    last = {}
    for node in graph.nodes:
        scope = tracer.node_scope.get(node)
        for path in names:
            if scope is not None and (scope == path or scope.startswith(path + ".")):
                last[path] = node
    missing = [p for p in names if p not in last]
    if missing:
        raise ValueError(f"no graph node inside module(s) {missing}")
    output = next(n for n in graph.nodes if n.op == "output")
    output.args = ({names[p]: last[p] for p in names},)
    gm = torch.fx.GraphModule(model, graph)
    gm.graph.eliminate_dead_code()  # what the requested outputs do not need
    gm.recompile()
    return gm


def install(timm) -> None:
    """Let timm's fx feature extraction run here: use torchvision's extractor when it is really
    installed, this one otherwise."""
    from timm.layers import _fx

    from timm_compat import placeholders

    if "torchvision" in placeholders() or not _fx.has_fx_feature_extraction:
        _fx._create_feature_extractor = create_feature_extractor
        _fx.has_fx_feature_extraction = True
