"""One module per weighting method; :data:`METHODS` maps each name to its class."""
from .aligned_mtl import AlignedMTL
from .cagrad import CAGrad
from .dwa import DWA
from .famo import FAMO
from .fixed import Fixed
from .gls import GLS
from .graddrop import GradDrop
from .gradnorm import GradNorm
from .gradvac import GradVac
from .imtl_g import IMTLG
from .imtl_l import IMTLL
from .mgda import MGDA
from .nash_mtl import NashMTL
from .pcgrad import PCGrad
from .rlw import RLW
from .uw import UW

METHODS = {cls.name: cls for cls in (Fixed, UW, DWA, RLW, GLS, FAMO, IMTLL, GradNorm, MGDA, PCGrad, CAGrad, IMTLG,
                                      NashMTL, AlignedMTL, GradVac, GradDrop)}

__all__ = ["METHODS", "AlignedMTL", "CAGrad", "DWA", "FAMO", "Fixed", "GLS", "GradDrop", "GradNorm", "GradVac", "IMTLG",
           "IMTLL", "MGDA", "NashMTL", "PCGrad", "RLW", "UW"]
