from architectures.timm_models import *
