"""Knowledge neurons (Dai et al. 2022): integrated-gradient attribution of MLP neurons, coarse and refined
neurons, and interventions on them.

`ig.py` computes attributions (fast engine and hook-based reference), `find.py` selects neurons, and
`intervene.py` suppresses or enhances them with controls.
"""

from kelocate.locate.neurons.find import KnowledgeNeurons, find_knowledge_neurons
from kelocate.locate.neurons.ig import integrated_gradients

__all__ = ["KnowledgeNeurons", "find_knowledge_neurons", "integrated_gradients"]
