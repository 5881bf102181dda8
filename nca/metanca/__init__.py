"""MetaNCA: a learned local rule that grows the weights of task MLPs of any size."""
