"""Pure-torch FLaRe/SPOC policy: config, encoder, decoder with KV-cache, actor/critic."""
from .config import PRESETS, PolicyConfig, flare_small3, tiny
from .decoder import KVCache, TransformerDecoder, episode_window_mask
from .encoder import GoalEncoder
from .policy import ActorCritic, PolicyInput, PolicyNet, apply_action_mask

__all__ = ["PRESETS", "PolicyConfig", "flare_small3", "tiny", "KVCache", "TransformerDecoder",
           "episode_window_mask", "GoalEncoder", "ActorCritic", "PolicyInput", "PolicyNet", "apply_action_mask"]
