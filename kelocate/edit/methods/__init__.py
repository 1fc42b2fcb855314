"""The edit methods, one module (or folder) each, apart from the machinery they share in `kelocate.edit`.

Weight editors: `rome`, `memit`, `pmet`, `alphaedit` (locate-then-edit, key statistics and target
optimisation from `edit/keys.py`, `edit/target.py`, `edit/covariance.py`), `kn` (knowledge-neuron slots),
`ft` (FT-L, FT-M), `adalora` (peft adapters, merged), `mend/` (a trained hypernetwork). Served editors that
change no weight: `ice` (ICE, IKE: in-context text) and `serac/` (an edit memory with a scope classifier and
a counterfactual model). `kelocate.edit.registry` lists them and what each needs; nothing imports a method
module by name except through it.
"""
