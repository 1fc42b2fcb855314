"""Knowledge neurons (Dai et al. 2022): integrated-gradient attribution of MLP neurons, coarse and refined
neurons, and interventions on them.

`ig.py` computes attributions (fast engine and hook-based reference), `find.py` selects neurons (and notes
prompts whose answer the model does not know), `intervene.py` suppresses or enhances them with a
random-neuron control, and `specificity.py` checks whether they move other facts of the relation too.
"""

from kelocate.locate.neurons.find import KnowledgeNeurons, find_knowledge_neurons
from kelocate.locate.neurons.ig import integrated_gradients
from kelocate.locate.neurons.specificity import Specificity, specificity_control

__all__ = ["KnowledgeNeurons", "Specificity", "find_knowledge_neurons", "integrated_gradients", "specificity_control"]
