from architectures.torchvision_models import *
