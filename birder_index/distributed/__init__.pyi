from .cluster import RaySettings as RaySettings
from .cluster import ray_session as ray_session
from .embed import EmbedActor as EmbedActor
from .embed import EncoderRecipe as EncoderRecipe
from .embed import RayBatch as RayBatch
from .embed import embed_on_ray as embed_on_ray
from .readable import check_readable as check_readable
