from architectures.classic import *
