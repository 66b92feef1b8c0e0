export default defineNuxtConfig({
  modules: ['lean-events/nuxt'],
  leanEvents: { routes: true, dashboard: true, flows: ['order'] },
  compatibilityDate: '2025-07-15',
})
